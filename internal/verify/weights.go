package verify

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

// packageWeights serves reference weights read back from converted
// packages (palettized ones dequantized), falling back to base for
// tensors the packages do not carry under a recognisable name (for
// example norm gammas of 1 that coremltools folds away).
type packageWeights struct {
	base reference.Weights
	// byKey holds each weight's const or constexpr_lut_to_dense op; values
	// are decoded from the open packages when the reference asks, so
	// memory stays at what the reference holds.
	byKey map[string]*mil.Op
	// head holds the LM head's conv weight ops in order.
	head []*mil.Op
	pkgs []*coreml.Package
	// plusOne: the family stores RMSNorm gains as 1 + w (Gemma), so the
	// packages' gains are turned back into the checkpoint's w.
	plusOne bool
	// alpha is the packages' fp16 residual scale (com.anemll-go.fp16_scale,
	// 0: none); branch lists the weights it multiplies.
	alpha  float64
	branch []string
	// cache holds the last weight's bytes (see ReadRows).
	cache rawCache
}

type weight struct {
	data  []float32
	shape []int64
}

// PackageWeights reads the weights of every package in files for a model
// of configuration cfg. Tensors are matched to Hugging Face names by their
// const names (dots as underscores, "_to_fp16"/"_palettized" suffixes and
// "model_"/"language_model_" prefixes ignored); the LM head is rebuilt by
// joining its convolution weights in order, and the reference uses it even
// when the checkpoint ties it to the embeddings, so a quantized head is
// checked as the packages hold it.
func PackageWeights(files *runner.Files, base reference.Weights, cfg *hf.Config) (reference.Weights, error) {
	if files.Monolithic != "" {
		return monolithicWeights(files, base, cfg)
	}
	pw := newPackageWeights(base, cfg)
	paths := []string{files.Embeddings}
	for _, c := range files.Chunks {
		for _, p := range []string{c.Combined, c.FFN, c.Prefill} {
			if p != "" {
				paths = append(paths, p)
			}
		}
	}
	for _, p := range paths {
		if err := pw.addPackage(p, false); err != nil {
			pw.Close()
			return nil, err
		}
	}
	if err := pw.addPackage(files.LMHead, true); err != nil {
		pw.Close()
		return nil, err
	}
	return pw, nil
}

// newPackageWeights returns an empty packageWeights for a model of
// configuration cfg (whose family says how gains and scales are stored).
func newPackageWeights(base reference.Weights, cfg *hf.Config) *packageWeights {
	pw := &packageWeights{base: base, byKey: map[string]*mil.Op{}}
	if spec, err := arch.Resolve(cfg); err == nil {
		pw.plusOne = spec.Family.NormPlusOne
		pw.branch = []string{"self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias"}
		if spec.Family.SandwichNorms {
			pw.branch = []string{"post_attention_layernorm.weight", "post_feedforward_layernorm.weight"}
		}
	}
	return pw
}

// readScale records the package's fp16 residual scale, if any.
func (pw *packageWeights) readScale(pkg *coreml.Package, path string) error {
	if v, ok := pkg.Description.Metadata.UserDefined["com.anemll-go.fp16_scale"]; ok {
		a, err := strconv.ParseFloat(v, 64)
		if err != nil || !(a > 0 && a <= 1) {
			return fmt.Errorf("verify: %s: com.anemll-go.fp16_scale %q is not a number in (0, 1]", path, v)
		}
		pw.alpha = a
	}
	return nil
}

// Close releases the packages.
func (pw *packageWeights) Close() error {
	for _, p := range pw.pkgs {
		p.Close()
	}
	pw.pkgs = nil
	pw.cache = rawCache{}
	return nil
}

func normKey(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	s := strings.TrimSuffix(string(b), "_palettized")
	s = strings.TrimSuffix(s, "_to_fp16")
	for {
		t := strings.TrimPrefix(strings.TrimPrefix(s, "model_"), "language_model_")
		if t == s {
			return s
		}
		s = t
	}
}

func (pw *packageWeights) addPackage(path string, lmHead bool) error {
	pkg, err := coreml.Open(path)
	if err != nil {
		return err
	}
	pw.pkgs = append(pw.pkgs, pkg)
	if err := pw.readScale(pkg, path); err != nil {
		return err
	}
	for _, f := range pkg.Program.Functions {
		producers := map[string]*mil.Op{}
		for _, op := range f.Body.Ops {
			for _, o := range op.Outputs {
				producers[o.Name] = op
			}
		}
		var head []*mil.Op
		for _, op := range f.Body.Ops {
			switch op.Type {
			case "const", "constexpr_lut_to_dense":
				out := op.Outputs[0]
				if !out.Type.IsTensor() || !out.Type.DType.IsFloat() || out.Type.Rank() < 1 {
					continue
				}
				k := normKey(out.Name)
				if _, done := pw.byKey[k]; done || lmHead {
					continue
				}
				pw.byKey[k] = op
			case "conv":
				if !lmHead {
					continue
				}
				args := op.Input("weight")
				if len(args) != 1 || producers[args[0].Name] == nil {
					return fmt.Errorf("verify: %s: conv %s weight is not a constant", path, op.Name)
				}
				w := producers[args[0].Name]
				if s := w.Outputs[0].Type.Shape; len(s) < 2 || len(head) > 0 && s[1] != head[0].Outputs[0].Type.Shape[1] {
					return fmt.Errorf("verify: %s: LM head weight %s has shape %v", path, w.Name, s)
				}
				head = append(head, w)
			}
		}
		if lmHead && len(head) > 0 {
			pw.head = head
		}
	}
	return nil
}

// evalWeight returns the value of a const or constexpr_lut_to_dense op.
func evalWeight(op *mil.Op) (weight, error) {
	shape := op.Outputs[0].Type.Shape
	if op.Type == "const" {
		f, err := op.ConstValue().Floats()
		return weight{f, shape}, err
	}
	idxV, lutV, err := lutArgs(op)
	if err != nil {
		return weight{}, err
	}
	idx, err := lutIndices(idxV)
	if err != nil {
		return weight{}, err
	}
	lut, err := lutV.Floats()
	if err != nil {
		return weight{}, err
	}
	f, err := dequantize(idx, idxV.Type.Shape, lut, lutV.Type.Shape)
	return weight{f, shape}, err
}

// lutIndices unpacks a constexpr_lut_to_dense indices value to one byte
// per index (LUT indices are uint1…uint8), not eight: a big model's
// weights are read back one tensor at a time and this bounds each.
func lutIndices(v *mil.Value) ([]uint8, error) {
	bits := v.Type.DType.Bits()
	if v.Type.DType.IsFloat() || bits < 1 || bits > 8 {
		return nil, fmt.Errorf("LUT indices of type %s", v.Type.DType)
	}
	b, err := v.Bytes()
	if err != nil {
		return nil, err
	}
	return bitpack.Unpack(nil, b, int(v.Type.NumElements()), bits)
}

// dequantize applies constexpr_lut_to_dense with vector size 1: element p
// takes lut[p_0/bs_0, …, p_{K−1}/bs_{K−1}, index(p), 0].
func dequantize(idx []uint8, ishape []int64, lut []float32, lshape []int64) ([]float32, error) {
	k := len(ishape)
	if len(lshape) != k+2 || lshape[k+1] != 1 {
		return nil, fmt.Errorf("lut shape %v does not fit indices %v (vector size 1 only)", lshape, ishape)
	}
	entries := lshape[k]
	bs := make([]int64, k)
	for i := range bs {
		if lshape[i] <= 0 || ishape[i]%lshape[i] != 0 {
			return nil, fmt.Errorf("lut shape %v does not divide indices %v", lshape, ishape)
		}
		bs[i] = ishape[i] / lshape[i]
	}
	out := make([]float32, len(idx))
	pos := make([]int64, k)
	for n, ix := range idx {
		table := int64(0)
		for i := 0; i < k; i++ {
			table = table*lshape[i] + pos[i]/bs[i]
		}
		if int64(ix) >= entries {
			return nil, fmt.Errorf("index %d outside a %d-entry table", ix, entries)
		}
		out[n] = lut[table*entries+int64(ix)]
		for i := k - 1; i >= 0; i-- {
			pos[i]++
			if pos[i] < ishape[i] {
				break
			}
			pos[i] = 0
		}
	}
	return out, nil
}

// isHead reports whether name is an LM head matrix ("lm_head.weight", or
// "language_model.lm_head.weight" in a nested checkpoint).
func isHead(name string) bool {
	return name == "lm_head.weight" || strings.HasSuffix(name, ".lm_head.weight")
}

// Tensor implements reference.Weights.
func (pw *packageWeights) Tensor(name string) ([]float32, []int64, error) {
	if isHead(name) && pw.head != nil {
		return pw.lmHead()
	}
	op, ok := pw.byKey[normKey(name)]
	if !ok {
		return pw.base.Tensor(name)
	}
	got, err := evalWeight(op)
	if err != nil {
		return nil, nil, fmt.Errorf("verify: %s: %w", op.Outputs[0].Name, err)
	}
	// Conv weights [out,in,1,1] are read as [out,in] (the reference checks
	// every shape against config.json). A residual branch stored times α
	// is divided back; Gemma's gains 1 + w become w.
	shape := got.shape
	for len(shape) > 2 && shape[len(shape)-1] == 1 {
		shape = shape[:len(shape)-1]
	}
	out := got.data
	scale, plusOne := pw.transform(name)
	if scale != 1 || plusOne {
		w := make([]float32, len(out))
		for i, v := range out {
			x := float64(v) / scale
			if plusOne {
				x--
			}
			w[i] = float32(x)
		}
		out = w
	}
	return out, shape, nil
}

// lmHead joins the LM head's split weights as the package holds them, tied
// or not; rows beyond the vocabulary (padding of the last split) are
// dropped.
func (pw *packageWeights) lmHead() ([]float32, []int64, error) {
	emb, ok := pw.byKey["embed_tokens_weight"]
	if !ok || emb.Outputs[0].Type.Rank() != 2 {
		return nil, nil, fmt.Errorf("verify: the embeddings package holds no [vocab, hidden] table")
	}
	shape := emb.Outputs[0].Type.Shape
	rows := int64(0)
	for _, op := range pw.head {
		rows += op.Outputs[0].Type.Shape[0]
	}
	data := make([]float32, 0, rows*shape[1]) // one allocation: the head is the largest tensor
	for _, op := range pw.head {
		w, err := evalWeight(op)
		if err != nil {
			return nil, nil, fmt.Errorf("verify: LM head: %w", err)
		}
		if w.shape[1] != shape[1] {
			return nil, nil, fmt.Errorf("verify: LM head split %v does not fit the embeddings %v", w.shape, shape)
		}
		data = append(data, w.data...)
	}
	if int64(len(data)) < shape[0]*shape[1] {
		return nil, nil, fmt.Errorf("verify: LM head has %d rows for a vocabulary of %d", int64(len(data))/shape[1], shape[0])
	}
	return data[:shape[0]*shape[1]], slices.Clone(shape), nil
}

// SeparateLMHead tells the reference to read the LM head from Tensor even
// when the checkpoint ties it to the embeddings: the packages' head may be
// quantized differently from their embedding table.
func (pw *packageWeights) SeparateLMHead() bool { return pw.head != nil }

// Has implements the reference's optional name check.
func (pw *packageWeights) Has(name string) bool {
	if isHead(name) && pw.head != nil {
		return true
	}
	if h, ok := pw.base.(interface{ Has(string) bool }); ok {
		return h.Has(name)
	}
	_, _, err := pw.base.Tensor(name)
	return err == nil
}

// Tied reports whether LM head weights came from the package (for tests).
func (pw *packageWeights) hasLMHead() bool { return pw.head != nil }
