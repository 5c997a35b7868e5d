package verify

import (
	"fmt"
	"strings"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

// monolithicWeights is PackageWeights for a monolithic package: the
// embeddings and layer weights are matched by const name as in separate
// packages, and the LM head is rebuilt from the convolutions whose weight
// is named after it (lm_head…), in order, in the infer function.
func monolithicWeights(files *runner.Files, base reference.Weights) (reference.Weights, error) {
	pw := &packageWeights{base: base, byKey: map[string]weight{}}
	path := files.Monolithic
	pkg, err := coreml.Open(path)
	if err != nil {
		return nil, err
	}
	defer pkg.Close()
	f := pkg.Program.Function("infer")
	if f == nil {
		return nil, fmt.Errorf("verify: %s has no infer function", path)
	}
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
			if _, done := pw.byKey[k]; done || strings.HasPrefix(k, "lm_head") {
				continue
			}
			w, err := evalWeight(op)
			if err != nil {
				return nil, fmt.Errorf("verify: %s: %s: %w", path, out.Name, err)
			}
			pw.byKey[k] = w
		case "conv":
			args := op.Input("weight")
			if len(args) != 1 || producers[args[0].Name] == nil {
				return nil, fmt.Errorf("verify: %s: conv %s weight is not a constant", path, op.Name)
			}
			if !strings.HasPrefix(normKey(args[0].Name), "lm_head") {
				continue
			}
			w, err := evalWeight(producers[args[0].Name])
			if err != nil {
				return nil, fmt.Errorf("verify: %s: %w", path, err)
			}
			head = append(head, w)
		}
	}
	if len(head) > 0 {
		var data []float32
		rows := int64(0)
		for _, w := range head {
			data = append(data, w.data...)
			rows += w.shape[0]
		}
		pw.lmHead = &weight{data: data, shape: []int64{rows, head[0].shape[1]}}
	}
	return pw, nil
}
