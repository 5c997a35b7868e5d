package mil

import (
	"fmt"
	"sort"
)

// Opset names the operation set of spec version 9 (iOS18 / macOS15).
const OpsetIOS18 = "CoreML8"

// Program is a MIL program: one or more functions sharing a weight file.
type Program struct {
	// Version is the MILSpec program version (always 1).
	Version int64
	// Functions in the order they were added (written sorted by name).
	Functions []*Function
	// Attrs are program attributes such as coremltools' "buildInfo".
	Attrs []Attr
	// DocString is the program's documentation string (usually empty).
	DocString string
}

// NewProgram returns an empty version-1 program.
func NewProgram() *Program { return &Program{Version: 1} }

// Function returns the function named name, or nil.
func (p *Program) Function(name string) *Function {
	for _, f := range p.Functions {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// FunctionNames returns the names of p's functions, sorted.
func (p *Program) FunctionNames() []string {
	names := make([]string, len(p.Functions))
	for i, f := range p.Functions {
		names[i] = f.Name
	}
	sort.Strings(names)
	return names
}

// Attr returns the program attribute named name, or nil.
func (p *Program) Attr(name string) *Value { return findAttr(p.Attrs, name) }

// Function is a MIL function: typed inputs (tensors and states) and a body.
type Function struct {
	Name   string
	Inputs []NamedType
	// Opset is the operation set the body is specialised for ("CoreML8").
	Opset string
	Body  *Block
}

// Input returns the function input named name.
func (f *Function) Input(name string) (NamedType, bool) {
	for _, in := range f.Inputs {
		if in.Name == name {
			return in, true
		}
	}
	return NamedType{}, false
}

// NamedType is a name with its type: a function input or an op output.
type NamedType struct {
	Name string
	Type Type
}

// Block is a list of operations in topological order and the names of the
// values it returns.
type Block struct {
	Inputs  []NamedType
	Ops     []*Op
	Outputs []string
}

// Attr is a named constant attribute of an op or program.
type Attr struct {
	Name  string
	Value *Value
}

// Arg is one binding of an op input: a reference to a named value, or a
// literal constant (used by iOS18 constexpr ops).
type Arg struct {
	Name  string
	Value *Value
}

// Input is a parameter of an op with its bindings; variadic parameters such
// as concat's "values" have several.
type Input struct {
	Param string
	Args  []Arg
}

// Op is one operation.
type Op struct {
	// Type is the operation type, e.g. "conv" or "const".
	Type string
	// Name is the op's "name" attribute.
	Name    string
	Inputs  []Input
	Outputs []NamedType
	// Attrs are attributes other than "name"; a const op has "val".
	Attrs  []Attr
	Blocks []*Block
}

// Input returns the bindings of param, or nil.
func (op *Op) Input(param string) []Arg {
	for _, in := range op.Inputs {
		if in.Param == param {
			return in.Args
		}
	}
	return nil
}

// Attr returns the attribute named name, or nil.
func (op *Op) Attr(name string) *Value { return findAttr(op.Attrs, name) }

// ConstValue returns the value of a const op, or nil if op is not a const.
func (op *Op) ConstValue() *Value {
	if op.Type != "const" {
		return nil
	}
	return op.Attr("val")
}

func findAttr(attrs []Attr, name string) *Value {
	for _, a := range attrs {
		if a.Name == name {
			return a.Value
		}
	}
	return nil
}

// ValidationError describes a rule a program breaks.
type ValidationError struct {
	Function string
	Op       string
	Msg      string
}

func (e *ValidationError) Error() string {
	switch {
	case e.Op != "":
		return fmt.Sprintf("mil: function %q, op %q: %s", e.Function, e.Op, e.Msg)
	case e.Function != "":
		return fmt.Sprintf("mil: function %q: %s", e.Function, e.Msg)
	}
	return "mil: " + e.Msg
}

// ValidIdentifier reports whether s is a MIL identifier as coremltools
// writes them: [A-Za-z_][A-Za-z0-9_]*.
func ValidIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '@'):
		default:
			return false
		}
	}
	return true
}

// Validate checks the structural rules Core ML's loader enforces: at least
// one function, unique function names, valid and unique (per function)
// identifiers, every reference defined before use, consts with a value and
// no inputs, non-const ops without extra attributes, outputs defined, and
// state-typed values used only by state ops.
func (p *Program) Validate() error {
	if len(p.Functions) == 0 {
		return &ValidationError{Msg: "program has no functions"}
	}
	seenFn := map[string]bool{}
	for _, f := range p.Functions {
		if !ValidIdentifier(f.Name) {
			return &ValidationError{Function: f.Name, Msg: "function name is not a valid identifier"}
		}
		if seenFn[f.Name] {
			return &ValidationError{Function: f.Name, Msg: "duplicate function name"}
		}
		seenFn[f.Name] = true
		if err := f.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (f *Function) validate() error {
	fail := func(op, format string, a ...any) error {
		return &ValidationError{Function: f.Name, Op: op, Msg: fmt.Sprintf(format, a...)}
	}
	if f.Opset == "" {
		return fail("", "no opset")
	}
	if f.Body == nil {
		return fail("", "no body")
	}
	defined := map[string]Type{}
	for _, in := range f.Inputs {
		if !ValidIdentifier(in.Name) {
			return fail("", "input name %q is not a valid identifier", in.Name)
		}
		if _, dup := defined[in.Name]; dup {
			return fail("", "duplicate input %q", in.Name)
		}
		if in.Type.Kind == KindTensor && in.Type.VariableRank {
			return fail("", "input %q has variable rank", in.Name)
		}
		if in.Type.Kind == KindState && (in.Type.Elem == nil || !in.Type.Elem.Static()) {
			return fail("", "state input %q must wrap a tensor of fixed shape", in.Name)
		}
		defined[in.Name] = in.Type
	}
	return validateBlock(f.Body, defined, fail)
}

var stateOps = map[string]bool{"read_state": true, "write_state": true}

func validateBlock(b *Block, defined map[string]Type, fail func(op, format string, a ...any) error) error {
	opNames := map[string]bool{}
	for _, in := range b.Inputs {
		defined[in.Name] = in.Type
	}
	for _, op := range b.Ops {
		if op.Type == "" {
			return fail(op.Name, "op has no type")
		}
		if !ValidIdentifier(op.Name) {
			return fail(op.Name, "op name is not a valid identifier")
		}
		if opNames[op.Name] {
			return fail(op.Name, "duplicate op name")
		}
		opNames[op.Name] = true
		switch op.Type {
		case "const":
			if len(op.Inputs) != 0 {
				return fail(op.Name, "const op has inputs")
			}
			v := op.Attr("val")
			if v == nil {
				return fail(op.Name, "const op has no val attribute")
			}
			if len(op.Outputs) != 1 || !op.Outputs[0].Type.Equal(v.Type) {
				return fail(op.Name, "const op must have one output of its value's type")
			}
			if len(op.Attrs) != 1 {
				return fail(op.Name, "const op may only have the val attribute")
			}
		default:
			if len(op.Attrs) != 0 {
				return fail(op.Name, "non-const op has attributes besides name")
			}
		}
		for _, in := range op.Inputs {
			if len(in.Args) == 0 {
				return fail(op.Name, "input %q has no bindings", in.Param)
			}
			for _, a := range in.Args {
				if (a.Name == "") == (a.Value == nil) {
					return fail(op.Name, "input %q must bind a name or a value", in.Param)
				}
				if a.Name == "" {
					continue
				}
				t, ok := defined[a.Name]
				if !ok {
					return fail(op.Name, "input %q uses %q before it is defined", in.Param, a.Name)
				}
				if t.Kind == KindState && !stateOps[op.Type] {
					return fail(op.Name, "state %q used by %s (only read_state/write_state take states)", a.Name, op.Type)
				}
			}
		}
		for _, blk := range op.Blocks {
			inner := make(map[string]Type, len(defined))
			for k, v := range defined {
				inner[k] = v
			}
			if err := validateBlock(blk, inner, fail); err != nil {
				return err
			}
		}
		for _, out := range op.Outputs {
			if !ValidIdentifier(out.Name) {
				return fail(op.Name, "output name %q is not a valid identifier", out.Name)
			}
			if _, dup := defined[out.Name]; dup {
				return fail(op.Name, "output %q is defined twice", out.Name)
			}
			defined[out.Name] = out.Type
		}
	}
	for _, o := range b.Outputs {
		if _, ok := defined[o]; !ok {
			return fail("", "block output %q is not defined", o)
		}
	}
	return nil
}
