package verify

import (
	"fmt"
	"strings"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

// packageWeights serves reference weights read back from converted
// packages (palettized ones dequantized), falling back to base for
// tensors the packages do not carry under a recognisable name (for
// example norm gammas of 1 that coremltools folds away).
type packageWeights struct {
	base   reference.Weights
	byKey  map[string]weight
	lmHead *weight
}

type weight struct {
	data  []float32
	shape []int64
}

// PackageWeights reads the weights of every package in files. Tensors are
// matched to Hugging Face names by their const names (dots as
// underscores, "_to_fp16"/"_palettized" suffixes and "model_" prefixes
// ignored); the LM head is rebuilt by joining its convolution weights in
// order.
func PackageWeights(files *runner.Files, base reference.Weights) (reference.Weights, error) {
	if files.Monolithic != "" {
		return monolithicWeights(files, base)
	}
	pw := &packageWeights{base: base, byKey: map[string]weight{}}
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
			return nil, err
		}
	}
	if err := pw.addPackage(files.LMHead, true); err != nil {
		return nil, err
	}
	return pw, nil
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
	for strings.HasPrefix(s, "model_") {
		s = strings.TrimPrefix(s, "model_")
	}
	return s
}

func (pw *packageWeights) addPackage(path string, lmHead bool) error {
	pkg, err := coreml.Open(path)
	if err != nil {
		return err
	}
	defer pkg.Close()
	for _, f := range pkg.Program.Functions {
		producers := map[string]*mil.Op{}
		for _, op := range f.Body.Ops {
			for _, o := range op.Outputs {
				producers[o.Name] = op
			}
		}
		var head []weight
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
				w, err := evalWeight(op)
				if err != nil {
					return fmt.Errorf("verify: %s: %s: %w", path, out.Name, err)
				}
				pw.byKey[k] = w
			case "conv":
				if !lmHead {
					continue
				}
				args := op.Input("weight")
				if len(args) != 1 || producers[args[0].Name] == nil {
					return fmt.Errorf("verify: %s: conv %s weight is not a constant", path, op.Name)
				}
				w, err := evalWeight(producers[args[0].Name])
				if err != nil {
					return fmt.Errorf("verify: %s: %w", path, err)
				}
				head = append(head, w)
			}
		}
		if lmHead && len(head) > 0 {
			var data []float32
			rows := int64(0)
			cols := head[0].shape[1]
			for _, w := range head {
				data = append(data, w.data...)
				rows += w.shape[0]
			}
			pw.lmHead = &weight{data: data, shape: []int64{rows, cols}}
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
	arg := func(p string) (*mil.Value, error) {
		a := op.Input(p)
		if len(a) != 1 || a[0].Value == nil {
			return nil, fmt.Errorf("%s input %q is not a literal", op.Name, p)
		}
		return a[0].Value, nil
	}
	idxV, err := arg("indices")
	if err != nil {
		return weight{}, err
	}
	lutV, err := arg("lut")
	if err != nil {
		return weight{}, err
	}
	idx, err := idxV.Ints()
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

// dequantize applies constexpr_lut_to_dense with vector size 1: element p
// takes lut[p_0/bs_0, …, p_{K−1}/bs_{K−1}, index(p), 0].
func dequantize(idx []int64, ishape []int64, lut []float32, lshape []int64) ([]float32, error) {
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
		if ix < 0 || ix >= entries {
			return nil, fmt.Errorf("index %d outside a %d-entry table", ix, entries)
		}
		out[n] = lut[table*entries+ix]
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

// Tensor implements reference.Weights.
func (pw *packageWeights) Tensor(name string) ([]float32, []int64, error) {
	base, shape, err := pw.base.Tensor(name)
	if err != nil {
		return nil, nil, err
	}
	var w *weight
	if name == "lm_head.weight" && pw.lmHead != nil {
		w = pw.lmHead
	} else if got, ok := pw.byKey[normKey(name)]; ok {
		w = &got
	}
	if w == nil {
		return base, shape, nil
	}
	if int64(len(w.data)) < int64(len(base)) {
		return nil, nil, fmt.Errorf("verify: package holds %d values for %s, the checkpoint %d", len(w.data), name, len(base))
	}
	// Padded LM-head rows beyond the vocabulary are dropped; conv weights
	// [out,in,1,1] are read as [out,in].
	return w.data[:len(base)], shape, nil
}

// Tied reports whether LM head weights came from the package (for tests).
func (pw *packageWeights) hasLMHead() bool { return pw.lmHead != nil }
