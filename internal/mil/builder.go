package mil

import (
	"fmt"
	"sort"
)

// Var is a named value in a function being built: a function input or an
// op output.
type Var struct {
	Name string
	Type Type
	// Const is the value when the var is the output of a const op.
	Const *Value
}

// F16 is a float written as an fp16 scalar when used as an op input in In.
type F16 float32

// Literal wraps a constant that binds directly as an op input value (the
// iOS18 constexpr form) instead of through a const op.
type Literal struct{ Value *Value }

// In maps op parameter names to what binds them: *Var; []*Var for variadic
// parameters; Literal; *Value (emitted as a const op named
// "<op>_<param>"); or Go shorthands turned into const ops: int (int32
// scalar), []int (int32 vector), bool, []bool, string, float32 (fp32
// scalar), F16 (fp16 scalar).
type In map[string]any

// Builder builds one function, checking every op as it is added: parameter
// names, defined-before-use, unique names, and output types inferred from
// the inputs. The first error is kept and returned by Function; later calls
// become no-ops.
type Builder struct {
	fn    *Function
	vars  map[string]*Var
	ops   map[string]bool
	count map[string]int
	err   error
}

// NewBuilder starts a function called name for opset (usually OpsetIOS18).
func NewBuilder(name, opset string) *Builder {
	return &Builder{
		fn:    &Function{Name: name, Opset: opset, Body: &Block{}},
		vars:  map[string]*Var{},
		ops:   map[string]bool{},
		count: map[string]int{},
	}
}

// Err returns the first error met while building.
func (b *Builder) Err() error { return b.err }

func (b *Builder) fail(format string, a ...any) *Var {
	if b.err == nil {
		b.err = fmt.Errorf("mil: build %s: %s", b.fn.Name, fmt.Sprintf(format, a...))
	}
	return &Var{Name: "_invalid", Type: ScalarType(Invalid)}
}

// UniqueName returns prefix, or prefix_N for the first N that makes it
// unused in this function.
func (b *Builder) UniqueName(prefix string) string {
	if !b.used(prefix) {
		return prefix
	}
	for {
		n := b.count[prefix]
		b.count[prefix]++
		s := fmt.Sprintf("%s_%d", prefix, n)
		if !b.used(s) {
			return s
		}
	}
}

func (b *Builder) used(s string) bool { _, v := b.vars[s]; return v || b.ops[s] }

func (b *Builder) claim(name string) bool {
	if !ValidIdentifier(name) {
		b.fail("name %q is not a valid identifier", name)
		return false
	}
	if b.used(name) {
		b.fail("name %q is used twice", name)
		return false
	}
	return true
}

// Input declares a function input (a tensor, or a state).
func (b *Builder) Input(name string, t Type) *Var {
	if b.err != nil || !b.claim(name) {
		return b.fail("input %q", name)
	}
	if t.Kind == KindState && (t.Elem == nil || !t.Elem.Static()) {
		return b.fail("state input %q must wrap a fixed-shape tensor", name)
	}
	v := &Var{Name: name, Type: t}
	b.vars[name] = v
	b.fn.Inputs = append(b.fn.Inputs, NamedType{name, t})
	return v
}

// Const adds a const op named name with value v.
func (b *Builder) Const(name string, v *Value) *Var {
	if b.err != nil {
		return b.fail("")
	}
	if v == nil {
		return b.fail("const %q has no value", name)
	}
	if v.Data != nil || v.Strings != nil {
		if err := v.CheckSize(v.Data); err != nil {
			return b.fail("const %q: %v", name, err)
		}
	}
	if !b.claim(name) {
		return b.fail("")
	}
	b.ops[name] = true
	out := &Var{Name: name, Type: v.Type, Const: v}
	b.vars[name] = out
	b.fn.Body.Ops = append(b.fn.Body.Ops, &Op{
		Type: "const", Name: name,
		Outputs: []NamedType{{name, v.Type}},
		Attrs:   []Attr{{"val", v}},
	})
	return out
}

// Op adds a single-output op whose output type is inferred; the op and its
// output var are both called name.
func (b *Builder) Op(opType, name string, in In) *Var {
	outs := b.add(opType, name, in, nil)
	if len(outs) != 1 {
		return b.fail("op %s %q: want one output, have %d", opType, name, len(outs))
	}
	return outs[0]
}

// OpN adds an op with several outputs named name_0, name_1, ... (or with
// none, like write_state).
func (b *Builder) OpN(opType, name string, in In) []*Var { return b.add(opType, name, in, nil) }

// OpTyped adds an op with explicitly typed outputs (for ops whose types
// cannot be inferred); outputs are named name, or name_0.. when several.
func (b *Builder) OpTyped(opType, name string, in In, outs ...Type) []*Var {
	return b.add(opType, name, in, outs)
}

func (b *Builder) add(opType, name string, in In, outTypes []Type) []*Var {
	if b.err != nil {
		return nil
	}
	spec, known := opSpecs[opType]
	if !known && outTypes == nil {
		b.fail("op %q: unknown op type %s (give output types with OpTyped)", name, opType)
		return nil
	}
	if !b.claim(name) {
		return nil
	}
	b.ops[name] = true
	op := &Op{Type: opType, Name: name}
	ctx := &inferCtx{op: name, types: map[string][]Type{}, consts: map[string]*Value{}}
	params := make([]string, 0, len(in))
	for p := range in {
		params = append(params, p)
	}
	sort.Slice(params, func(i, j int) bool {
		return spec.order(params[i]) < spec.order(params[j]) || spec.order(params[i]) == spec.order(params[j]) && params[i] < params[j]
	})
	for _, p := range params {
		if known && spec.order(p) == len(spec.params) {
			b.fail("op %s %q: unknown parameter %q (known: %v)", opType, name, p, spec.params)
			return nil
		}
		args, err := b.bind(name, p, in[p])
		if err != nil {
			b.fail("op %s %q: parameter %q: %v", opType, name, p, err)
			return nil
		}
		op.Inputs = append(op.Inputs, Input{Param: p, Args: args})
		for _, a := range args {
			if a.Value != nil {
				ctx.types[p] = append(ctx.types[p], a.Value.Type)
				ctx.consts[p] = a.Value
				continue
			}
			v := b.vars[a.Name]
			ctx.types[p] = append(ctx.types[p], v.Type)
			if v.Const != nil {
				ctx.consts[p] = v.Const
			}
		}
	}
	if known {
		for _, p := range spec.required {
			if _, ok := in[p]; !ok {
				b.fail("op %s %q: missing required parameter %q", opType, name, p)
				return nil
			}
		}
	}
	if outTypes == nil {
		var err error
		outTypes, err = spec.infer(ctx)
		if err != nil {
			b.fail("op %s %q: %v", opType, name, err)
			return nil
		}
	}
	vars := make([]*Var, len(outTypes))
	for i, t := range outTypes {
		n := name
		if len(outTypes) > 1 {
			n = fmt.Sprintf("%s_%d", name, i)
			if !b.claim(n) {
				return nil
			}
		}
		vars[i] = &Var{Name: n, Type: t}
		b.vars[n] = vars[i]
		op.Outputs = append(op.Outputs, NamedType{n, t})
	}
	b.fn.Body.Ops = append(b.fn.Body.Ops, op)
	return vars
}

func (b *Builder) bind(opName, param string, x any) ([]Arg, error) {
	one := func(v *Var) ([]Arg, error) {
		if v == nil {
			return nil, fmt.Errorf("nil var")
		}
		if got, ok := b.vars[v.Name]; !ok || got != v {
			return nil, fmt.Errorf("var %q is not defined in this function", v.Name)
		}
		return []Arg{{Name: v.Name}}, nil
	}
	switch x := x.(type) {
	case *Var:
		return one(x)
	case []*Var:
		if len(x) == 0 {
			return nil, fmt.Errorf("empty variadic list")
		}
		args := make([]Arg, 0, len(x))
		for _, v := range x {
			a, err := one(v)
			if err != nil {
				return nil, err
			}
			args = append(args, a...)
		}
		return args, nil
	case Literal:
		if x.Value == nil {
			return nil, fmt.Errorf("nil literal")
		}
		return []Arg{{Value: x.Value}}, nil
	}
	v, err := literalValue(x)
	if err != nil {
		return nil, err
	}
	c := b.Const(b.UniqueName(opName+"_"+param), v)
	if b.err != nil {
		return nil, b.err
	}
	return []Arg{{Name: c.Name}}, nil
}

func literalValue(x any) (*Value, error) {
	switch x := x.(type) {
	case *Value:
		return x, nil
	case int:
		return ScalarInt32(int32(x)), nil
	case int32:
		return ScalarInt32(x), nil
	case []int:
		v := make([]int32, len(x))
		for i, e := range x {
			v[i] = int32(e)
		}
		return Int32Vec(v...), nil
	case []int32:
		return Int32Vec(x...), nil
	case bool:
		return ScalarBool(x), nil
	case []bool:
		return BoolVec(x...), nil
	case string:
		return ScalarString(x), nil
	case float32:
		return ScalarFloat32(x), nil
	case F16:
		return ScalarFP16(float32(x)), nil
	}
	return nil, fmt.Errorf("cannot bind a %T", x)
}

// Output sets the function's outputs, in order.
func (b *Builder) Output(vars ...*Var) {
	if b.err != nil {
		return
	}
	b.fn.Body.Outputs = b.fn.Body.Outputs[:0]
	for _, v := range vars {
		if got, ok := b.vars[v.Name]; !ok || got != v {
			b.fail("output %q is not defined in this function", v.Name)
			return
		}
		b.fn.Body.Outputs = append(b.fn.Body.Outputs, v.Name)
	}
}

// Var returns the var called name, if defined.
func (b *Builder) Var(name string) (*Var, bool) { v, ok := b.vars[name]; return v, ok }

// Function finishes the function, validates it and returns it.
func (b *Builder) Function() (*Function, error) {
	if b.err != nil {
		return nil, b.err
	}
	if len(b.fn.Body.Outputs) == 0 {
		return nil, fmt.Errorf("mil: build %s: no outputs", b.fn.Name)
	}
	if err := b.fn.validate(); err != nil {
		return nil, err
	}
	return b.fn, nil
}
