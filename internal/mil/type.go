package mil

import (
	"fmt"
	"strings"
)

// Kind says which variant of ValueType a Type is.
type Kind uint8

// Type kinds.
const (
	KindTensor Kind = iota
	KindState
	KindList
	KindTuple
	KindDict
)

// Unknown marks a dimension whose size is not known when the program is
// built (for example the batch axis of an input with enumerated shapes).
const Unknown int64 = -1

// Type is a MIL value type: a tensor (rank 0 is a scalar), a state wrapping
// a tensor, a list, a tuple or a dictionary.
type Type struct {
	Kind Kind
	// DType and Shape describe a tensor. A dimension equal to Unknown has no
	// fixed size.
	DType DType
	Shape []int64
	// VariableRank marks a tensor whose rank is not known (rank −1).
	VariableRank bool
	// Elem is the wrapped tensor of a state, or the element type of a list.
	Elem *Type
	// ListLen is the length of a list (Unknown if not fixed).
	ListLen int64
	// Elems are the member types of a tuple.
	Elems []Type
	// Key and Value are the types of a dictionary.
	Key, Value *Type
}

// TensorType returns the type of a tensor of dt with the given shape.
func TensorType(dt DType, shape ...int64) Type {
	return Type{Kind: KindTensor, DType: dt, Shape: append([]int64{}, shape...)}
}

// ScalarType returns the type of a rank-0 tensor of dt.
func ScalarType(dt DType) Type { return Type{Kind: KindTensor, DType: dt} }

// StateType returns the type of a state holding a tensor of type t.
func StateType(t Type) Type { return Type{Kind: KindState, Elem: &t} }

// DictType returns the type of a dictionary from k to v.
func DictType(k, v Type) Type { return Type{Kind: KindDict, Key: &k, Value: &v} }

// Rank returns the number of dimensions of a tensor type.
func (t Type) Rank() int { return len(t.Shape) }

// IsTensor reports whether t is a tensor type.
func (t Type) IsTensor() bool { return t.Kind == KindTensor }

// Static reports whether t is a tensor whose every dimension is known.
func (t Type) Static() bool {
	if t.Kind != KindTensor || t.VariableRank {
		return false
	}
	for _, d := range t.Shape {
		if d < 0 {
			return false
		}
	}
	return true
}

// NumElements returns the element count of a tensor type, or −1 if any
// dimension is unknown.
func (t Type) NumElements() int64 {
	if !t.Static() {
		return -1
	}
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Equal reports whether t and u are the same type.
func (t Type) Equal(u Type) bool {
	if t.Kind != u.Kind {
		return false
	}
	switch t.Kind {
	case KindTensor:
		if t.DType != u.DType || t.VariableRank != u.VariableRank || len(t.Shape) != len(u.Shape) {
			return false
		}
		for i := range t.Shape {
			if t.Shape[i] != u.Shape[i] {
				return false
			}
		}
		return true
	case KindState:
		return t.Elem != nil && u.Elem != nil && t.Elem.Equal(*u.Elem)
	case KindList:
		return t.ListLen == u.ListLen && t.Elem != nil && u.Elem != nil && t.Elem.Equal(*u.Elem)
	case KindTuple:
		if len(t.Elems) != len(u.Elems) {
			return false
		}
		for i := range t.Elems {
			if !t.Elems[i].Equal(u.Elems[i]) {
				return false
			}
		}
		return true
	case KindDict:
		return t.Key != nil && u.Key != nil && t.Value != nil && u.Value != nil &&
			t.Key.Equal(*u.Key) && t.Value.Equal(*u.Value)
	}
	return false
}

// String spells t as Apple's model.mil text does, e.g. "tensor<fp16, [1, ?, 64]>".
func (t Type) String() string {
	switch t.Kind {
	case KindTensor:
		if t.VariableRank {
			return fmt.Sprintf("tensor<%s, *>", t.DType)
		}
		return fmt.Sprintf("tensor<%s, %s>", t.DType, ShapeString(t.Shape))
	case KindState:
		if t.Elem == nil {
			return "state<?>"
		}
		return fmt.Sprintf("state<%s>", t.Elem)
	case KindList:
		n := "?"
		if t.ListLen >= 0 {
			n = fmt.Sprint(t.ListLen)
		}
		if t.Elem == nil {
			return fmt.Sprintf("list<?, %s>", n)
		}
		return fmt.Sprintf("list<%s, %s>", t.Elem, n)
	case KindTuple:
		parts := make([]string, len(t.Elems))
		for i, e := range t.Elems {
			parts[i] = e.String()
		}
		return "tuple<" + strings.Join(parts, ", ") + ">"
	case KindDict:
		if t.Key == nil || t.Value == nil {
			return "dict<?>"
		}
		return fmt.Sprintf("dict<%s, %s>", t.Key, t.Value)
	}
	return "?"
}

// ShapeString spells a shape as "[1, ?, 64]".
func ShapeString(shape []int64) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		if d < 0 {
			sb.WriteByte('?')
		} else {
			fmt.Fprint(&sb, d)
		}
	}
	sb.WriteByte(']')
	return sb.String()
}

// Clone returns a deep copy of t.
func (t Type) Clone() Type {
	c := t
	c.Shape = append([]int64(nil), t.Shape...)
	if t.Elem != nil {
		e := t.Elem.Clone()
		c.Elem = &e
	}
	if t.Elems != nil {
		c.Elems = make([]Type, len(t.Elems))
		for i, e := range t.Elems {
			c.Elems[i] = e.Clone()
		}
	}
	if t.Key != nil {
		k := t.Key.Clone()
		c.Key = &k
	}
	if t.Value != nil {
		v := t.Value.Clone()
		c.Value = &v
	}
	return c
}
