package spec

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Unmarshal decodes the bytes of a model.mlmodel file. Fields that this
// schema subset does not declare (for example a neuralNetwork model body) are
// kept as unknown fields, are reported by UnknownFieldPaths, and are written
// back unchanged by Marshal.
func Unmarshal(b []byte) (*Model, error) {
	m := new(Model)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("spec: decode model: %w", err)
	}
	return m, nil
}

// Marshal encodes m deterministically: fields in number order and map
// entries sorted by key, so equal models always give equal bytes. Apple's
// writer emits map entries in hash order instead, so re-encoding a file made
// by coremltools gives the same length and content but map entries may come
// in another order.
func Marshal(m *Model) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("spec: encode model: %w", err)
	}
	return b, nil
}

// UnknownFieldPaths returns the path of every message in the tree rooted at
// m that carries unknown fields, in field-number order (map entries in key
// order), e.g. `mlProgram.functions["main"].inputs[0].type`. The root itself
// is reported as "". An empty result means the schema covered every field.
func UnknownFieldPaths(m proto.Message) []string {
	var paths []string
	if m == nil {
		return nil
	}
	walkUnknown(m.ProtoReflect(), "", &paths)
	return paths
}

func walkUnknown(m protoreflect.Message, path string, out *[]string) {
	if !m.IsValid() {
		return
	}
	if len(m.GetUnknown()) > 0 {
		*out = append(*out, path)
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		name := string(fd.Name())
		if path != "" {
			name = path + "." + name
		}
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				continue
			}
			mp := v.Map()
			keys := make([]protoreflect.MapKey, 0, mp.Len())
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			sortMapKeys(keys)
			for _, k := range keys {
				walkUnknown(mp.Get(k).Message(), name+"["+formatKey(k)+"]", out)
			}
		case fd.IsList():
			if fd.Message() == nil {
				continue
			}
			l := v.List()
			for j := 0; j < l.Len(); j++ {
				walkUnknown(l.Get(j).Message(), name+"["+strconv.Itoa(j)+"]", out)
			}
		case fd.Message() != nil:
			walkUnknown(v.Message(), name, out)
		}
	}
}

func formatKey(k protoreflect.MapKey) string {
	if s, ok := k.Interface().(string); ok {
		return strconv.Quote(s)
	}
	return k.String()
}

// sortMapKeys orders keys by their string form; all map keys in this
// schema are strings, for which that is plain byte-wise string order.
func sortMapKeys(keys []protoreflect.MapKey) {
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int {
		return strings.Compare(a.String(), b.String())
	})
}
