package mil

import "fmt"

// CheckTypes re-infers the output types of every op whose type the builder
// knows and reports the first op whose declared output types disagree, as
// coremltools' loader does when it rebuilds a program ("mismatch between
// var types in specification vs PyMIL"). Unknown dimensions on either side
// are compatible with any size. Ops the builder does not know are skipped.
func (f *Function) CheckTypes() error {
	types := map[string]Type{}
	consts := map[string]*Value{}
	for _, in := range f.Inputs {
		types[in.Name] = in.Type
	}
	for _, op := range f.Body.Ops {
		if v := op.ConstValue(); v != nil {
			consts[op.Outputs[0].Name] = v
		}
		spec, known := opSpecs[op.Type]
		if known && op.Type != "const" {
			ctx := &inferCtx{op: op.Name, types: map[string][]Type{}, consts: map[string]*Value{}}
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					if a.Value != nil {
						ctx.types[in.Param] = append(ctx.types[in.Param], a.Value.Type)
						ctx.consts[in.Param] = a.Value
						continue
					}
					t, ok := types[a.Name]
					if !ok {
						return fmt.Errorf("mil: function %q, op %q: input %q is not defined", f.Name, op.Name, a.Name)
					}
					ctx.types[in.Param] = append(ctx.types[in.Param], t)
					if c := consts[a.Name]; c != nil {
						ctx.consts[in.Param] = c
					}
				}
			}
			want, err := spec.infer(ctx)
			if err != nil {
				return fmt.Errorf("mil: function %q, op %q (%s): %w", f.Name, op.Name, op.Type, err)
			}
			if len(want) != len(op.Outputs) {
				return fmt.Errorf("mil: function %q, op %q (%s): %d outputs declared, %d inferred", f.Name, op.Name, op.Type, len(op.Outputs), len(want))
			}
			for i, w := range want {
				if !compatible(op.Outputs[i].Type, w) {
					return fmt.Errorf("mil: function %q, op %q (%s): output %q declared %s, inferred %s", f.Name, op.Name, op.Type, op.Outputs[i].Name, op.Outputs[i].Type, w)
				}
			}
		}
		for _, o := range op.Outputs {
			types[o.Name] = o.Type
		}
	}
	return nil
}

// compatible reports whether two types agree, an unknown dimension
// matching any size.
func compatible(a, b Type) bool {
	if a.Kind != b.Kind {
		return false
	}
	if a.Kind != KindTensor {
		return a.Equal(b)
	}
	if a.DType != b.DType {
		return false
	}
	if a.VariableRank || b.VariableRank {
		return true
	}
	if len(a.Shape) != len(b.Shape) {
		return false
	}
	for i := range a.Shape {
		if a.Shape[i] >= 0 && b.Shape[i] >= 0 && a.Shape[i] != b.Shape[i] {
			return false
		}
	}
	return true
}

// CheckTypes runs Function.CheckTypes on every function.
func (p *Program) CheckTypes() error {
	for _, f := range p.Functions {
		if err := f.CheckTypes(); err != nil {
			return err
		}
	}
	return nil
}
