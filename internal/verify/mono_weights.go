package verify

import (
	"fmt"
	"strings"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

// monolithicWeights is PackageWeights for a monolithic package: the
// embeddings and layer weights are matched by const name as in separate
// packages, and the LM head is rebuilt from the convolutions whose weight
// is named after it (lm_head…), in order, in the infer function.
func monolithicWeights(files *runner.Files, base reference.Weights, cfg *hf.Config) (reference.Weights, error) {
	pw := newPackageWeights(base, cfg)
	path := files.Monolithic
	pkg, err := coreml.Open(path)
	if err != nil {
		return nil, err
	}
	pw.pkgs = append(pw.pkgs, pkg)
	if err := pw.readScale(pkg, path); err != nil {
		pw.Close()
		return nil, err
	}
	f := pkg.Program.Function("infer")
	if f == nil {
		pw.Close()
		return nil, fmt.Errorf("verify: %s has no infer function", path)
	}
	producers := map[string]*mil.Op{}
	for _, op := range f.Body.Ops {
		for _, o := range op.Outputs {
			producers[o.Name] = op
		}
	}
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
			pw.byKey[k] = op
		case "conv":
			args := op.Input("weight")
			if len(args) != 1 || producers[args[0].Name] == nil {
				pw.Close()
				return nil, fmt.Errorf("verify: %s: conv %s weight is not a constant", path, op.Name)
			}
			if strings.HasPrefix(normKey(args[0].Name), "lm_head") {
				pw.head = append(pw.head, producers[args[0].Name])
			}
		}
	}
	return pw, nil
}
