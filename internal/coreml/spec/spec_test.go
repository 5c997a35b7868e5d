package spec_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/anemll/anemll/internal/coreml/spec"
	"github.com/anemll/anemll/internal/coreml/spec/milspec"
)

// readGz returns the decompressed contents of a gzipped testdata file.
func readGz(tb testing.TB, name string) []byte {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return b
}

func decodeFile(tb testing.TB, name string) (*spec.Model, []byte) {
	tb.Helper()
	raw := readGz(tb, name)
	m, err := spec.Unmarshal(raw)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return m, raw
}

// referenceModel lists facts about each reference package, taken from the
// structure dumps that coremltools printed for it (see testdata/README.md).
type referenceModel struct {
	file            string
	ops             map[string]int // function name -> op count in its CoreML8 block
	defaultFunction string         // "" for single-function models
	blobRefs        int            // blobFileValue references in the program
	distinctOffsets int
}

var referenceModels = []referenceModel{
	{"packages/llama_FFN_PF_lut4_chunk_01of02.mlmodel.gz", map[string]int{"infer": 257, "prefill": 270}, "infer", 30, 15},
	{"packages/llama_FFN_PF_lut4_chunk_02of02.mlmodel.gz", map[string]int{"infer": 267, "prefill": 232}, "infer", 24, 15},
	{"packages/llama_FFN_lut4_chunk_01of02.mlmodel.gz", map[string]int{"main": 257}, "", 15, 15},
	{"packages/llama_FFN_lut4_chunk_02of02.mlmodel.gz", map[string]int{"main": 267}, "", 15, 15},
	{"packages/llama_embeddings.mlmodel.gz", map[string]int{"main": 16}, "", 1, 1},
	{"packages/llama_lm_head_lut6.mlmodel.gz", map[string]int{"main": 92}, "", 16, 16},
	{"packages/llama_prefill_lut4_chunk_01of02.mlmodel.gz", map[string]int{"main": 270}, "", 15, 15},
	{"packages/llama_prefill_lut4_chunk_02of02.mlmodel.gz", map[string]int{"main": 232}, "", 9, 9},
	{"packages-fp16/llama_FFN_PF_chunk_01of02.mlmodel.gz", map[string]int{"infer": 250, "prefill": 263}, "infer", 20, 10},
	{"packages-fp16/llama_FFN_PF_chunk_02of02.mlmodel.gz", map[string]int{"infer": 260, "prefill": 225}, "infer", 17, 10},
	{"packages-fp16/llama_FFN_chunk_01of02.mlmodel.gz", map[string]int{"main": 250}, "", 10, 10},
	{"packages-fp16/llama_FFN_chunk_02of02.mlmodel.gz", map[string]int{"main": 260}, "", 10, 10},
	{"packages-fp16/llama_embeddings.mlmodel.gz", map[string]int{"main": 16}, "", 1, 1},
	{"packages-fp16/llama_lm_head.mlmodel.gz", map[string]int{"main": 92}, "", 8, 8},
	{"packages-fp16/llama_prefill_chunk_01of02.mlmodel.gz", map[string]int{"main": 263}, "", 10, 10},
	{"packages-fp16/llama_prefill_chunk_02of02.mlmodel.gz", map[string]int{"main": 225}, "", 7, 7},
}

// TestReferenceFilesListed makes sure the table covers every copied file.
func TestReferenceFilesListed(t *testing.T) {
	var got []string
	for _, pat := range []string{"packages/*.mlmodel.gz", "packages-fp16/*.mlmodel.gz"} {
		m, err := filepath.Glob(filepath.Join("testdata", pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel("testdata", p)
			got = append(got, filepath.ToSlash(rel))
		}
	}
	var want []string
	for _, r := range referenceModels {
		want = append(want, r.file)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("testdata models %v, table lists %v", got, want)
	}
}

// blobRefs collects every Value.BlobFileValue reachable from m.
func blobRefs(m protoreflect.Message, out *[]*milspec.Value_BlobFileValue) {
	if v, ok := m.Interface().(*milspec.Value_BlobFileValue); ok {
		*out = append(*out, v)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					blobRefs(mv.Message(), out)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					blobRefs(v.List().Get(i).Message(), out)
				}
			}
		case fd.Message() != nil:
			blobRefs(v.Message(), out)
		}
		return true
	})
}

// TestReferenceModelsDecodeCompletely decodes every model.mlmodel written by
// coremltools and fails if any message in the tree holds unknown fields,
// i.e. if Apple wrote anything our schema subset does not declare.
func TestReferenceModelsDecodeCompletely(t *testing.T) {
	for _, tc := range referenceModels {
		t.Run(tc.file, func(t *testing.T) {
			m, _ := decodeFile(t, tc.file)
			if p := spec.UnknownFieldPaths(m); len(p) != 0 {
				t.Fatalf("unknown fields at %q", p)
			}
			if got := m.GetSpecificationVersion(); got != 9 {
				t.Errorf("specificationVersion = %d, want 9", got)
			}
			prog := m.GetMlProgram()
			if prog == nil {
				t.Fatalf("model type %T, want *spec.Model_MlProgram", m.GetType())
			}
			if prog.GetVersion() != 1 {
				t.Errorf("program version = %d, want 1", prog.GetVersion())
			}
			if len(prog.GetFunctions()) != len(tc.ops) {
				t.Errorf("%d functions, want %d", len(prog.GetFunctions()), len(tc.ops))
			}
			for name, wantOps := range tc.ops {
				fn := prog.GetFunctions()[name]
				if fn.GetOpset() != "CoreML8" {
					t.Errorf("function %q opset %q, want CoreML8", name, fn.GetOpset())
				}
				blk := fn.GetBlockSpecializations()["CoreML8"]
				if got := len(blk.GetOperations()); got != wantOps {
					t.Errorf("function %q has %d ops, want %d", name, got, wantOps)
				}
			}
			desc := m.GetDescription()
			if got := desc.GetDefaultFunctionName(); got != tc.defaultFunction {
				t.Errorf("defaultFunctionName = %q, want %q", got, tc.defaultFunction)
			}
			if tc.defaultFunction != "" {
				var names []string
				for _, f := range desc.GetFunctions() {
					names = append(names, f.GetName())
				}
				if !slices.Equal(names, []string{"infer", "prefill"}) {
					t.Errorf("description functions %v, want [infer prefill]", names)
				}
			} else if len(desc.GetFunctions()) != 0 || len(desc.GetInput()) == 0 {
				t.Errorf("single-function model: %d function descriptions, %d inputs", len(desc.GetFunctions()), len(desc.GetInput()))
			}
			var refs []*milspec.Value_BlobFileValue
			blobRefs(m.ProtoReflect(), &refs)
			offsets := map[uint64]bool{}
			for _, r := range refs {
				if r.GetFileName() != "@model_path/weights/weight.bin" {
					t.Errorf("blob fileName %q", r.GetFileName())
				}
				if r.GetOffset()%64 != 0 {
					t.Errorf("blob offset %d not 64-aligned", r.GetOffset())
				}
				offsets[r.GetOffset()] = true
			}
			if len(refs) != tc.blobRefs || len(offsets) != tc.distinctOffsets {
				t.Errorf("%d blob references at %d offsets, want %d at %d", len(refs), len(offsets), tc.blobRefs, tc.distinctOffsets)
			}
		})
	}
}

// TestDescriptionDetails checks the ANEMLL I/O contract members that need
// the less common schema parts: enumerated shapes and states.
func TestDescriptionDetails(t *testing.T) {
	t.Run("embeddings enumerated shapes", func(t *testing.T) {
		m, _ := decodeFile(t, "packages-fp16/llama_embeddings.mlmodel.gz")
		in := m.GetDescription().GetInput()
		if len(in) != 1 || in[0].GetName() != "input_ids" {
			t.Fatalf("inputs %v", in)
		}
		arr := in[0].GetType().GetMultiArrayType()
		if arr.GetDataType() != spec.ArrayFeatureType_INT32 || int32(arr.GetDataType()) != 131104 {
			t.Errorf("dataType %v", arr.GetDataType())
		}
		if !slices.Equal(arr.GetShape(), []int64{1, 1}) {
			t.Errorf("default shape %v", arr.GetShape())
		}
		var shapes [][]int64
		for _, s := range arr.GetEnumeratedShapes().GetShapes() {
			shapes = append(shapes, s.GetShape())
		}
		if len(shapes) != 2 || !slices.Equal(shapes[0], []int64{1, 1}) || !slices.Equal(shapes[1], []int64{1, 64}) {
			t.Errorf("enumerated shapes %v, want [[1 1] [1 64]]", shapes)
		}
		out := m.GetDescription().GetOutput()[0].GetType().GetMultiArrayType()
		if out.GetDataType() != spec.ArrayFeatureType_FLOAT16 || len(out.GetShape()) != 0 {
			t.Errorf("output %v", out)
		}
		fin := m.GetMlProgram().GetFunctions()["main"].GetInputs()[0].GetType().GetTensorType()
		if fin.GetDataType() != milspec.DataType_INT32 || fin.GetRank() != 2 ||
			fin.GetDimensions()[0].GetConstant().GetSize() != 1 || fin.GetDimensions()[1].GetUnknown() == nil {
			t.Errorf("MIL input type %v, want tensor<int32,[1,?]>", fin)
		}
		md := m.GetDescription().GetMetadata()
		if md.GetVersionString() != "0.1.1" || md.GetUserDefined()["com.anemll.context_length"] != "256" {
			t.Errorf("metadata %v", md)
		}
	})
	t.Run("multifunction state", func(t *testing.T) {
		m, _ := decodeFile(t, "packages/llama_FFN_PF_lut4_chunk_01of02.mlmodel.gz")
		for _, fd := range m.GetDescription().GetFunctions() {
			st := fd.GetState()
			if len(st) != 1 || st[0].GetName() != "model_model_kv_cache_0" {
				t.Fatalf("function %q states %v", fd.GetName(), st)
			}
			a := st[0].GetType().GetStateType().GetArrayType()
			if a.GetDataType() != spec.ArrayFeatureType_FLOAT16 || !slices.Equal(a.GetShape(), []int64{4, 2, 512, 16}) {
				t.Errorf("function %q state type %v", fd.GetName(), a)
			}
			var mil *milspec.StateType
			for _, in := range m.GetMlProgram().GetFunctions()[fd.GetName()].GetInputs() {
				if in.GetName() == "model_model_kv_cache_0" {
					mil = in.GetType().GetStateType()
				}
			}
			tt := mil.GetWrappedType().GetTensorType()
			var dims []uint64
			for _, d := range tt.GetDimensions() {
				dims = append(dims, d.GetConstant().GetSize())
			}
			if tt.GetDataType() != milspec.DataType_FLOAT16 || !slices.Equal(dims, []uint64{4, 2, 512, 16}) {
				t.Errorf("function %q MIL state %v", fd.GetName(), tt)
			}
		}
	})
}

// TestTextprotoMatchesBinary parses the protobuf text dumps made with
// Apple's own schema and compares them with our binary decode of the same
// file; equal messages prove our field names and numbers agree with Apple's.
func TestTextprotoMatchesBinary(t *testing.T) {
	tests := []struct {
		text   string
		models []string
	}{
		// The embeddings part has no LUT, so both trees hold the same
		// message (their bytes differ only in map entry order).
		{"textproto/llama_embeddings.txt.gz", []string{"packages/llama_embeddings.mlmodel.gz", "packages-fp16/llama_embeddings.mlmodel.gz"}},
		{"textproto/llama_lm_head_lut6.txt.gz", []string{"packages/llama_lm_head_lut6.mlmodel.gz"}},
		{"textproto/llama_prefill_chunk_02of02.txt.gz", []string{"packages-fp16/llama_prefill_chunk_02of02.mlmodel.gz"}},
		{"textproto/llama_FFN_PF_chunk_01of02.txt.gz", []string{"packages-fp16/llama_FFN_PF_chunk_01of02.mlmodel.gz"}},
	}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			var fromText spec.Model
			if err := prototext.Unmarshal(readGz(t, tc.text), &fromText); err != nil {
				t.Fatal(err)
			}
			for _, mf := range tc.models {
				fromBin, _ := decodeFile(t, mf)
				if !proto.Equal(&fromText, fromBin) {
					t.Errorf("text %s and binary %s decode to different messages", tc.text, mf)
				}
			}
		})
	}
	// Guard: the comparison can fail; a text dump does not match another file.
	var emb spec.Model
	if err := prototext.Unmarshal(readGz(t, "textproto/llama_embeddings.txt.gz"), &emb); err != nil {
		t.Fatal(err)
	}
	lm, _ := decodeFile(t, "packages-fp16/llama_lm_head.mlmodel.gz")
	if proto.Equal(&emb, lm) {
		t.Error("embeddings text dump equals the lm_head model")
	}
}

// canonicalWire rewrites an encoded message so that the entries of every
// map field are sorted by their encoded bytes and emitted where the first
// entry of that field was, recursing into all known message fields. Two
// encodings with equal canonical forms differ only in map entry order.
func canonicalWire(b []byte, md protoreflect.MessageDescriptor) ([]byte, error) {
	type rec struct {
		raw     []byte
		mapNum  protowire.Number // nonzero: placeholder for a map field
		entries [][]byte
	}
	var recs []*rec
	maps := map[protowire.Number]*rec{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		field := b[:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType || fd.Message() == nil {
			recs = append(recs, &rec{raw: field})
			continue
		}
		val, _ := protowire.ConsumeBytes(field[n:])
		sub, err := canonicalWire(val, fd.Message())
		if err != nil {
			return nil, err
		}
		enc := protowire.AppendBytes(protowire.AppendTag(nil, num, typ), sub)
		if !fd.IsMap() {
			recs = append(recs, &rec{raw: enc})
			continue
		}
		r := maps[num]
		if r == nil {
			r = &rec{mapNum: num}
			maps[num] = r
			recs = append(recs, r)
		}
		r.entries = append(r.entries, enc)
	}
	var out []byte
	for _, r := range recs {
		if r.mapNum == 0 {
			out = append(out, r.raw...)
			continue
		}
		slices.SortFunc(r.entries, bytes.Compare)
		for _, e := range r.entries {
			out = append(out, e...)
		}
	}
	return out, nil
}

// TestRoundTrip decodes each reference file, re-encodes it with
// deterministic marshaling and decodes again.
//
// Finding: the re-encoded bytes are NOT byte-identical to Apple's files,
// because coremltools writes map entries (Metadata.userDefined,
// Program.functions, Operation.inputs/attributes, ...) in hash-table order,
// while deterministic Go marshaling sorts them by key. Everything else is
// identical: the lengths are equal, and after sorting map entries in both
// encodings (canonicalWire) the bytes match exactly, so field order, packed
// encoding and the choice of emitted fields agree with Apple's writer.
func TestRoundTrip(t *testing.T) {
	md := (&spec.Model{}).ProtoReflect().Descriptor()
	identical := 0
	for _, tc := range referenceModels {
		t.Run(tc.file, func(t *testing.T) {
			m, raw := decodeFile(t, tc.file)
			enc, err := spec.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			again, err := spec.Unmarshal(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m, again) {
				t.Fatal("decode(encode(m)) != m")
			}
			if len(enc) != len(raw) {
				t.Errorf("re-encoded %d bytes, original %d", len(enc), len(raw))
			}
			if bytes.Equal(enc, raw) {
				identical++
			}
			cr, err := canonicalWire(raw, md)
			if err != nil {
				t.Fatal(err)
			}
			ce, err := canonicalWire(enc, md)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(cr, ce) {
				t.Error("encodings differ by more than map entry order")
			}
			enc2, err := spec.Marshal(again)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, enc2) {
				t.Error("deterministic encoding is not stable across a round trip")
			}
		})
	}
	t.Logf("%d of %d reference files re-encode byte-identically", identical, len(referenceModels))
}

// TestCanonicalWireDetectsChanges guards TestRoundTrip: a one-byte change
// outside map ordering must make canonical forms differ.
func TestCanonicalWireDetectsChanges(t *testing.T) {
	md := (&spec.Model{}).ProtoReflect().Descriptor()
	m, raw := decodeFile(t, "packages-fp16/llama_embeddings.mlmodel.gz")
	m.Description.Metadata.VersionString = "0.1.2" // same length as 0.1.1
	enc, err := spec.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := canonicalWire(raw, md)
	if err != nil {
		t.Fatal(err)
	}
	ce, err := canonicalWire(enc, md)
	if err != nil {
		t.Fatal(err)
	}
	if len(cr) != len(ce) || bytes.Equal(cr, ce) {
		t.Fatalf("canonical forms: lengths %d/%d, equal=%v; want same length, different bytes", len(cr), len(ce), bytes.Equal(cr, ce))
	}
}

// TestUnknownFieldsSurvive injects fields our subset omits (a neuralNetwork
// model body at Model field 500, an imageType at FeatureType field 4) and
// checks they are reported, kept on decode and written back on encode.
func TestUnknownFieldsSurvive(t *testing.T) {
	_, raw := decodeFile(t, "packages-fp16/llama_embeddings.mlmodel.gz")

	// Model.neuralNetwork (500) holding NeuralNetwork{arrayInputShapeMapping (5): 1}.
	nn := protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), 1)
	topUnknown := protowire.AppendBytes(protowire.AppendTag(nil, 500, protowire.BytesType), nn)
	// FeatureType.imageType (4) holding ImageFeatureType{width (1): 224}.
	img := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 224)
	ftUnknown := protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), img)

	m, err := spec.Unmarshal(append(slices.Clip(raw), topUnknown...))
	if err != nil {
		t.Fatal(err)
	}
	ft := m.GetDescription().GetOutput()[0].GetType()
	ft.ProtoReflect().SetUnknown(ftUnknown)

	wantPaths := []string{"", "description.output[0].type"}
	if got := spec.UnknownFieldPaths(m); !slices.Equal(got, wantPaths) {
		t.Fatalf("UnknownFieldPaths = %q, want %q", got, wantPaths)
	}
	enc, err := spec.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(enc, topUnknown) || !bytes.Contains(enc, ftUnknown) {
		t.Fatal("unknown fields missing from the encoding")
	}
	back, err := spec.Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got := []byte(back.ProtoReflect().GetUnknown()); !bytes.Equal(got, topUnknown) {
		t.Errorf("model unknown bytes %x, want %x", got, topUnknown)
	}
	if got := []byte(back.GetDescription().GetOutput()[0].GetType().ProtoReflect().GetUnknown()); !bytes.Equal(got, ftUnknown) {
		t.Errorf("feature type unknown bytes %x, want %x", got, ftUnknown)
	}
	if !proto.Equal(m, back) {
		t.Error("round trip with unknown fields changed the message")
	}
	if back.GetMlProgram() == nil {
		t.Error("mlProgram lost next to an unknown oneof member")
	}
}

func TestUnmarshalErrors(t *testing.T) {
	_, raw := decodeFile(t, "packages-fp16/llama_embeddings.mlmodel.gz")
	tests := []struct {
		name string
		in   []byte
	}{
		{"truncated", raw[:len(raw)-7]},
		{"bad tag", []byte{0x00}},
		{"overlong length", []byte{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"invalid utf8 string", protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType),
			protowire.AppendBytes(protowire.AppendTag(nil, 21, protowire.BytesType), []byte{0xff, 0xfe}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := spec.Unmarshal(tc.in)
			if err == nil || m != nil {
				t.Fatalf("Unmarshal = %v, %v; want nil and an error", m, err)
			}
			if got := err.Error(); len(got) < 6 || got[:6] != "spec: " {
				t.Errorf("error %q lacks the spec: prefix", got)
			}
		})
	}
}

func TestUnknownFieldPathsMapKeys(t *testing.T) {
	op := &milspec.Operation{Attributes: map[string]*milspec.Value{
		"b": {}, "a": {},
	}}
	for _, k := range []string{"b", "a"} {
		op.Attributes[k].ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	}
	want := []string{`attributes["a"]`, `attributes["b"]`}
	if got := spec.UnknownFieldPaths(op); !slices.Equal(got, want) {
		t.Errorf("paths %q, want %q", got, want)
	}
	if got := spec.UnknownFieldPaths(nil); got != nil {
		t.Errorf("nil message: %q", got)
	}
}

// syntheticModel is a small model touching the schema parts the reference
// files do not use (shape ranges, default values, every TensorValue and
// ValueType member, nested blocks, pipelines).
func syntheticModel() *spec.Model {
	scalar := func(dt milspec.DataType) *milspec.ValueType {
		return &milspec.ValueType{Type: &milspec.ValueType_TensorType{TensorType: &milspec.TensorType{DataType: dt}}}
	}
	tensor := func(dt milspec.DataType, tv *milspec.TensorValue) *milspec.Value {
		return &milspec.Value{Type: scalar(dt), Value: &milspec.Value_ImmediateValue_{ImmediateValue: &milspec.Value_ImmediateValue{
			Value: &milspec.Value_ImmediateValue_Tensor{Tensor: tv}}}}
	}
	tvs := []*milspec.Value{
		tensor(milspec.DataType_FLOAT32, &milspec.TensorValue{Value: &milspec.TensorValue_Floats{Floats: &milspec.TensorValue_RepeatedFloats{Values: []float32{1.5, -2}}}}),
		tensor(milspec.DataType_INT32, &milspec.TensorValue{Value: &milspec.TensorValue_Ints{Ints: &milspec.TensorValue_RepeatedInts{Values: []int32{-1, 7}}}}),
		tensor(milspec.DataType_BOOL, &milspec.TensorValue{Value: &milspec.TensorValue_Bools{Bools: &milspec.TensorValue_RepeatedBools{Values: []bool{true, false}}}}),
		tensor(milspec.DataType_STRING, &milspec.TensorValue{Value: &milspec.TensorValue_Strings{Strings: &milspec.TensorValue_RepeatedStrings{Values: []string{"x"}}}}),
		tensor(milspec.DataType_INT64, &milspec.TensorValue{Value: &milspec.TensorValue_LongInts{LongInts: &milspec.TensorValue_RepeatedLongInts{Values: []int64{1 << 40}}}}),
		tensor(milspec.DataType_FLOAT64, &milspec.TensorValue{Value: &milspec.TensorValue_Doubles{Doubles: &milspec.TensorValue_RepeatedDoubles{Values: []float64{0.25}}}}),
		tensor(milspec.DataType_FLOAT16, &milspec.TensorValue{Value: &milspec.TensorValue_Bytes{Bytes: &milspec.TensorValue_RepeatedBytes{Values: []byte{0x00, 0x3c}}}}),
		{Type: scalar(milspec.DataType_FLOAT16), Value: &milspec.Value_BlobFileValue_{BlobFileValue: &milspec.Value_BlobFileValue{FileName: "@model_path/weights/weight.bin", Offset: 64}}},
	}
	imm := func(v *milspec.Value_ImmediateValue) *milspec.Value {
		return &milspec.Value{Value: &milspec.Value_ImmediateValue_{ImmediateValue: v}}
	}
	unknownDim := &milspec.Dimension{Dimension: &milspec.Dimension_Unknown{Unknown: &milspec.Dimension_UnknownDimension{Variadic: true}}}
	op := &milspec.Operation{
		Type: "cond",
		Inputs: map[string]*milspec.Argument{
			"pred": {Arguments: []*milspec.Argument_Binding{{Binding: &milspec.Argument_Binding_Name{Name: "x"}}, {Binding: &milspec.Argument_Binding_Value{Value: tvs[2]}}}},
		},
		Outputs: []*milspec.NamedValueType{
			{Name: "l", Type: &milspec.ValueType{Type: &milspec.ValueType_ListType{ListType: &milspec.ListType{Type: scalar(milspec.DataType_INT4), Length: unknownDim}}}},
			{Name: "t", Type: &milspec.ValueType{Type: &milspec.ValueType_TupleType{TupleType: &milspec.TupleType{Types: []*milspec.ValueType{scalar(milspec.DataType_UINT6), scalar(milspec.DataType_FLOAT8E5M2)}}}}},
		},
		Blocks: []*milspec.Block{{Inputs: []*milspec.NamedValueType{{Name: "b", Type: scalar(milspec.DataType_BFLOAT16)}}, Outputs: []string{"b"}}},
		Attributes: map[string]*milspec.Value{
			"tuple": imm(&milspec.Value_ImmediateValue{Value: &milspec.Value_ImmediateValue_Tuple{Tuple: &milspec.TupleValue{Values: tvs[:4]}}}),
			"list":  imm(&milspec.Value_ImmediateValue{Value: &milspec.Value_ImmediateValue_List{List: &milspec.ListValue{Values: tvs[4:]}}}),
			"dict": imm(&milspec.Value_ImmediateValue{Value: &milspec.Value_ImmediateValue_Dictionary{Dictionary: &milspec.DictionaryValue{
				Values: []*milspec.DictionaryValue_KeyValuePair{{Key: tvs[3], Value: tvs[0]}}}}}),
		},
	}
	state := &milspec.ValueType{Type: &milspec.ValueType_StateType{StateType: &milspec.StateType{WrappedType: scalar(milspec.DataType_FLOAT16)}}}
	prog := &milspec.Program{
		Version:   1,
		DocString: "synthetic",
		Functions: map[string]*milspec.Function{"main": {
			Inputs:               []*milspec.NamedValueType{{Name: "x", Type: scalar(milspec.DataType_BOOL)}, {Name: "s", Type: state}},
			Opset:                "CoreML8",
			BlockSpecializations: map[string]*milspec.Block{"CoreML8": {Outputs: []string{"l"}, Operations: []*milspec.Operation{op}}},
		}},
		Attributes: map[string]*milspec.Value{"d": {Type: &milspec.ValueType{Type: &milspec.ValueType_DictionaryType{DictionaryType: &milspec.DictionaryType{
			KeyType: scalar(milspec.DataType_STRING), ValueType: scalar(milspec.DataType_UINT1)}}}}},
	}
	ranged := &spec.ArrayFeatureType{
		Shape:    []int64{1, 8},
		DataType: spec.ArrayFeatureType_FLOAT32,
		ShapeFlexibility: &spec.ArrayFeatureType_ShapeRange_{ShapeRange: &spec.ArrayFeatureType_ShapeRange{
			SizeRanges: []*spec.SizeRange{{LowerBound: 1, UpperBound: 1}, {LowerBound: 8, UpperBound: -1}}}},
		DefaultOptionalValue: &spec.ArrayFeatureType_FloatDefaultValue{FloatDefaultValue: 0.5},
	}
	feat := func(name string, ft *spec.FeatureType) *spec.FeatureDescription {
		return &spec.FeatureDescription{Name: name, ShortDescription: "d", Type: ft}
	}
	fn := &spec.FunctionDescription{
		Name:  "main",
		Input: []*spec.FeatureDescription{feat("x", &spec.FeatureType{Type: &spec.FeatureType_MultiArrayType{MultiArrayType: ranged}, IsOptional: true})},
		Output: []*spec.FeatureDescription{
			feat("i", &spec.FeatureType{Type: &spec.FeatureType_Int64Type{Int64Type: &spec.Int64FeatureType{}}}),
			feat("f", &spec.FeatureType{Type: &spec.FeatureType_DoubleType{DoubleType: &spec.DoubleFeatureType{}}}),
			feat("s", &spec.FeatureType{Type: &spec.FeatureType_StringType{StringType: &spec.StringFeatureType{}}}),
		},
		State: []*spec.FeatureDescription{feat("s", &spec.FeatureType{Type: &spec.FeatureType_StateType{StateType: &spec.StateFeatureType{
			Type: &spec.StateFeatureType_ArrayType{ArrayType: &spec.ArrayFeatureType{Shape: []int64{2}, DataType: spec.ArrayFeatureType_FLOAT16}}}}})},
		PredictedFeatureName:       "i",
		PredictedProbabilitiesName: "f",
	}
	inner := &spec.Model{SpecificationVersion: 9, Type: &spec.Model_MlProgram{MlProgram: prog}}
	return &spec.Model{
		SpecificationVersion: 9,
		IsUpdatable:          true,
		Description: &spec.ModelDescription{
			Functions:           []*spec.FunctionDescription{fn},
			DefaultFunctionName: "main",
			TrainingInput:       []*spec.FeatureDescription{feat("y", &spec.FeatureType{Type: &spec.FeatureType_MultiArrayType{MultiArrayType: &spec.ArrayFeatureType{DataType: spec.ArrayFeatureType_INT8, DefaultOptionalValue: &spec.ArrayFeatureType_IntDefaultValue{IntDefaultValue: 3}}}})},
			Metadata:            &spec.Metadata{License: "MIT", UserDefined: map[string]string{"k": "v"}},
		},
		Type: &spec.Model_Pipeline{Pipeline: &spec.Pipeline{Models: []*spec.Model{inner}, Names: []string{"m0"}}},
	}
}

// TestSyntheticModelRoundTrip encodes a model using the schema members the
// reference files lack and checks they decode back unchanged, with no field
// lost to unknown fields and exact wire bytes for two known members.
func TestSyntheticModelRoundTrip(t *testing.T) {
	m := syntheticModel()
	enc, err := spec.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := spec.Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, back) {
		t.Fatal("synthetic model changed in a round trip")
	}
	if p := spec.UnknownFieldPaths(back); len(p) != 0 {
		t.Fatalf("unknown fields at %q", p)
	}
	// ArrayFeatureType.floatDefaultValue (51, fixed32) = 0.5 -> tag 0x9d 0x03, 00 00 00 3f.
	if !bytes.Contains(enc, []byte{0x9d, 0x03, 0x00, 0x00, 0x00, 0x3f}) {
		t.Error("floatDefaultValue 0.5 not encoded as field 51 fixed32")
	}
	// SizeRange{lowerBound: 8, upperBound: -1} -> 08 08 10 ff×9 01.
	want := append([]byte{0x08, 0x08, 0x10}, bytes.Repeat([]byte{0xff}, 9)...)
	if !bytes.Contains(enc, append(want, 0x01)) {
		t.Error("SizeRange{8, -1} not encoded as expected")
	}
	if got := back.GetPipeline().GetModels()[0].GetMlProgram().GetDocString(); got != "synthetic" {
		t.Errorf("nested program docString %q", got)
	}
}

// FuzzUnmarshalModel checks that decoding never panics and that whatever
// decodes re-encodes stably. Seeds: every reference model.mlmodel and a
// small synthetic model.
//
// Run it with a short minimization budget:
//
//	go test ./internal/coreml/spec -run '^$' -fuzz FuzzUnmarshalModel -fuzztime=20s -fuzzminimizetime=1s
//
// With the default -fuzzminimizetime (60s) the first input that widens
// coverage is minimized for a whole minute (the seeds are 3–80 KB and every
// minimization step snapshots the coverage map), so a 20s run stalls after
// about ten executions.
func FuzzUnmarshalModel(f *testing.F) {
	for _, r := range referenceModels {
		f.Add(readGz(f, r.file))
	}
	syn, err := spec.Marshal(syntheticModel())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(syn)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := spec.Unmarshal(b)
		if err != nil {
			return
		}
		_ = spec.UnknownFieldPaths(m)
		enc, err := spec.Marshal(m)
		if err != nil {
			t.Fatalf("encode after successful decode: %v", err)
		}
		again, err := spec.Unmarshal(enc)
		if err != nil {
			t.Fatalf("decode of our own encoding: %v", err)
		}
		enc2, err := spec.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding not stable across a round trip")
		}
	})
}

func BenchmarkUnmarshalModel(b *testing.B) {
	raw := readGz(b, "packages/llama_FFN_PF_lut4_chunk_01of02.mlmodel.gz")
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := spec.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalModel(b *testing.B) {
	raw := readGz(b, "packages/llama_FFN_PF_lut4_chunk_01of02.mlmodel.gz")
	m, err := spec.Unmarshal(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := spec.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}
