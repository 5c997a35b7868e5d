package coreml

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/anemll/anemll/internal/mil"
)

// TestConstRoundTrip builds programs holding constants of every dtype,
// shape and storage, writes them, reads them back and compares types,
// bytes and where each was stored.
func TestConstRoundTrip(t *testing.T) {
	type tc struct {
		dt    mil.DType
		shape []int64
	}
	var cases []tc
	for _, dt := range []mil.DType{mil.Float16, mil.Float32, mil.Int8, mil.UInt8, mil.Int16, mil.UInt16, mil.Int32, mil.UInt32, mil.Int64,
		mil.Bool, mil.UInt1, mil.UInt2, mil.UInt3, mil.UInt4, mil.UInt6, mil.Int4, mil.BFloat16, mil.Float64} {
		for _, shape := range [][]int64{nil, {1}, {3}, {9}, {10}, {2, 5}, {7, 3, 1, 2}, {0}} {
			cases = append(cases, tc{dt, shape})
		}
	}
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	x := b.Input("x", mil.TensorType(mil.Float16, 1, mil.Unknown))
	var made []*mil.Value
	for i, c := range cases {
		n := int64(1)
		for _, d := range c.shape {
			n *= d
		}
		data := make([]byte, c.dt.ByteLen(n))
		for j := range data {
			data[j] = byte(31*i + 7*j + 1)
		}
		if c.dt == mil.Bool {
			for j := range data {
				data[j] &= 1
			}
		}
		if pad := int(n*int64(c.dt.Bits())) % 8; pad != 0 && len(data) > 0 {
			data[len(data)-1] &= byte(1<<pad - 1) // unused high bits are zero
		}
		v := mil.NewTensor(c.dt, c.shape, data)
		b.Const(fmt.Sprintf("c%d", i), v)
		made = append(made, v)
	}
	b.Const("s", mil.ScalarString("hello"))
	b.Const("strs", &mil.Value{Type: mil.TensorType(mil.String, 2), Strings: []string{"a", "ü"}})
	out := b.Op("identity", "y", mil.In{"x": x})
	b.Output(out)
	f, err := b.Function()
	if err != nil {
		t.Fatal(err)
	}
	pkg := &Package{SpecVersion: SpecVersionIOS18, Program: &mil.Program{Version: 1, Functions: []*mil.Function{f},
		Attrs: []mil.Attr{{Name: "buildInfo", Value: &mil.Value{
			Type:    mil.DictType(mil.ScalarType(mil.String), mil.ScalarType(mil.String)),
			Entries: []mil.DictEntry{{Key: mil.ScalarString("k"), Value: mil.ScalarString("v")}},
		}}}},
		Description: Description{
			Inputs:  []Feature{{Name: "x", Kind: MultiArray, DType: mil.Float16, Shape: []int64{1, 4}, Ranges: [][2]int64{{1, 1}, {1, 64}}}},
			Outputs: []Feature{{Name: "y", Kind: MultiArray, DType: mil.Float16}},
		}}
	dir := filepath.Join(t.TempDir(), "c.mlpackage")
	if err := Write(pkg, dir, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	ops := map[string]*mil.Op{}
	for _, op := range back.Program.Functions[0].Body.Ops {
		ops[op.Name] = op
	}
	for i, c := range cases {
		name := fmt.Sprintf("c%d", i)
		op := ops[name]
		if op == nil {
			t.Fatalf("%s missing", name)
		}
		got := op.ConstValue()
		if !got.Type.Equal(made[i].Type) {
			t.Errorf("%s %s%v: type %s", name, c.dt, c.shape, got.Type)
			continue
		}
		gb, err := got.Bytes()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(gb, made[i].Data) {
			t.Errorf("%s %s%v: bytes %x, want %x", name, c.dt, c.shape, gb, made[i].Data)
		}
		if wantBlob := made[i].WantsBlob(); (got.BlobFile != "") != wantBlob {
			t.Errorf("%s %s%v: stored in weight file = %v, want %v", name, c.dt, c.shape, got.BlobFile != "", wantBlob)
		}
	}
	if s, _ := ops["s"].ConstValue().Str(); s != "hello" {
		t.Errorf("string scalar %q", s)
	}
	if v := ops["strs"].ConstValue(); len(v.Strings) != 2 || v.Strings[1] != "ü" {
		t.Errorf("strings %v", v.Strings)
	}
	bi := back.Program.Attr("buildInfo")
	if bi == nil || len(bi.Entries) != 1 {
		t.Fatalf("buildInfo lost: %+v", bi)
	}
	if k, _ := bi.Entries[0].Key.Str(); k != "k" {
		t.Errorf("buildInfo key %q", k)
	}
	if r := back.Description.Inputs[0].Ranges; len(r) != 2 || r[1] != [2]int64{1, 64} {
		t.Errorf("shape ranges %v", r)
	}
}

// TestOpenErrors checks that damaged packages give errors, not panics.
func TestOpenErrors(t *testing.T) {
	src := filepath.Join(refDir, "packages/llama_lm_head_lut6.mlpackage")
	tests := []struct {
		name   string
		break_ func(dir string) error
	}{
		{"no manifest", func(d string) error { return removeFile(filepath.Join(d, "Manifest.json")) }},
		{"garbage model", func(d string) error {
			return writeBytes(filepath.Join(d, "Data/com.apple.CoreML/model.mlmodel"), []byte{0xff, 0xff, 0xff})
		}},
		{"truncated weights", func(d string) error {
			return truncateFile(filepath.Join(d, "Data/com.apple.CoreML/weights/weight.bin"), 1000)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyTree(t, src)
			if err := tc.break_(dir); err != nil {
				t.Fatal(err)
			}
			pkg, err := Open(dir)
			if err == nil {
				// Weight damage shows when the weights are read.
				_, err = readAllWeights(pkg)
				pkg.Close()
			}
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
}
