package coreml

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/anemll/anemll/internal/mil"
)

// Summary is what `anemll inspect` reports about a package.
type Summary struct {
	SpecVersion     int32             `json:"specification_version"`
	Functions       []FunctionSummary `json:"functions"`
	DefaultFunction string            `json:"default_function,omitempty"`
	Metadata        Metadata          `json:"metadata"`
	// WeightBytes is the weight-file payload by blob dtype, each blob
	// counted once.
	WeightBytes map[string]int64 `json:"weight_bytes"`
	// Blobs is the number of distinct blobs; SharedBlobs of them are used
	// by more than one function.
	Blobs       int `json:"blobs"`
	SharedBlobs int `json:"shared_blobs"`
	// DenseWeights names float weights (rank ≥ 2) kept unquantized in a
	// package that palettizes others.
	DenseWeights []string `json:"dense_weights,omitempty"`
}

// FunctionSummary describes one function.
type FunctionSummary struct {
	Name    string         `json:"name"`
	Inputs  []Feature      `json:"inputs"`
	Outputs []Feature      `json:"outputs"`
	States  []Feature      `json:"states,omitempty"`
	Ops     map[string]int `json:"op_histogram"`
	NumOps  int            `json:"num_ops"`
}

// MarshalJSON spells a feature with readable dtype names.
func (f Feature) MarshalJSON() ([]byte, error) {
	kind := "multiArray"
	if f.Kind == StateFeature {
		kind = "state"
	}
	return json.Marshal(struct {
		Name       string    `json:"name"`
		Kind       string    `json:"kind"`
		DType      string    `json:"dtype"`
		Shape      []int64   `json:"shape"`
		Enumerated [][]int64 `json:"enumerated_shapes,omitempty"`
		Optional   bool      `json:"optional,omitempty"`
	}{f.Name, kind, f.DType.String(), nonNil(f.Shape), f.Enumerated, f.Optional})
}

func nonNil(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}

// Summarize gathers the facts of a package for inspection.
func Summarize(p *Package) (*Summary, error) {
	s := &Summary{SpecVersion: p.SpecVersion, DefaultFunction: p.Description.DefaultFunction,
		Metadata: p.Description.Metadata, WeightBytes: map[string]int64{}}
	type blobKey struct {
		file string
		off  uint64
	}
	users := map[blobKey]map[string]bool{}
	sizes := map[blobKey]int64{}
	dtypes := map[blobKey]string{}
	var inMemory int64
	hasLUT := false
	for _, f := range sortedFunctions(p.Program) {
		fd, err := p.Description.Function(f.Name)
		if err != nil {
			return nil, err
		}
		fs := FunctionSummary{Name: f.Name, Inputs: fd.Inputs, Outputs: fd.Outputs, States: fd.States, Ops: map[string]int{}}
		fs.NumOps = len(f.Body.Ops)
		for _, op := range f.Body.Ops {
			fs.Ops[op.Type]++
			if op.Type == "constexpr_lut_to_dense" {
				hasLUT = true
			}
			var vals []*mil.Value
			for _, a := range op.Attrs {
				vals = append(vals, a.Value)
			}
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					if a.Value != nil {
						vals = append(vals, a.Value)
					}
				}
			}
			for _, v := range vals {
				if v.Type.Kind != mil.KindTensor || !v.WantsBlob() {
					continue
				}
				n := v.Type.DType.ByteLen(v.Type.NumElements())
				if v.BlobFile == "" {
					inMemory++
					k := blobKey{"", uint64(inMemory)}
					users[k] = map[string]bool{f.Name: true}
					sizes[k], dtypes[k] = n, v.Type.DType.String()
					continue
				}
				k := blobKey{v.BlobFile, v.BlobOffset}
				if users[k] == nil {
					users[k] = map[string]bool{}
				}
				users[k][f.Name] = true
				sizes[k], dtypes[k] = n, v.Type.DType.String()
			}
		}
		s.Functions = append(s.Functions, fs)
	}
	for k, u := range users {
		s.Blobs++
		if len(u) > 1 {
			s.SharedBlobs++
		}
		s.WeightBytes[dtypes[k]] += sizes[k]
	}
	if hasLUT {
		seen := map[string]bool{}
		for _, f := range sortedFunctions(p.Program) {
			for _, op := range f.Body.Ops {
				if v := op.ConstValue(); v != nil && v.Type.DType.IsFloat() && v.Type.Rank() >= 2 && !seen[op.Name] {
					seen[op.Name] = true
					s.DenseWeights = append(s.DenseWeights, op.Name)
				}
			}
		}
		sort.Strings(s.DenseWeights)
	}
	return s, nil
}

func featureString(f Feature) string {
	kind := "multiArray"
	if f.Kind == StateFeature {
		kind = "state"
	}
	s := fmt.Sprintf("%s %s %s", kind, f.DType, mil.ShapeString(f.Shape))
	if len(f.Enumerated) > 0 {
		parts := make([]string, len(f.Enumerated))
		for i, e := range f.Enumerated {
			parts[i] = mil.ShapeString(e)
		}
		s += " enumerated {" + strings.Join(parts, ", ") + "}"
	}
	return s
}

// WriteText prints s as a human-readable report.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "specification version: %d\n", s.SpecVersion)
	names := make([]string, len(s.Functions))
	for i, f := range s.Functions {
		names[i] = f.Name
	}
	fmt.Fprintf(&b, "functions: %s", strings.Join(names, ", "))
	if s.DefaultFunction != "" {
		fmt.Fprintf(&b, " (default %s)", s.DefaultFunction)
	}
	b.WriteString("\n")
	m := s.Metadata
	fmt.Fprintf(&b, "metadata: author=%q version=%q license=%q\n  short description: %q\n", m.Author, m.Version, m.License, m.ShortDescription)
	keys := make([]string, 0, len(m.UserDefined))
	for k := range m.UserDefined {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s = %q\n", k, m.UserDefined[k])
	}
	for _, f := range s.Functions {
		fmt.Fprintf(&b, "function %s (%d ops):\n", f.Name, f.NumOps)
		for _, in := range f.Inputs {
			fmt.Fprintf(&b, "  input  %-24s %s\n", in.Name, featureString(in))
		}
		for _, o := range f.Outputs {
			fmt.Fprintf(&b, "  output %-24s %s\n", o.Name, featureString(o))
		}
		for _, st := range f.States {
			fmt.Fprintf(&b, "  state  %-24s %s\n", st.Name, featureString(st))
		}
		ops := make([]string, 0, len(f.Ops))
		for k := range f.Ops {
			ops = append(ops, k)
		}
		sort.Slice(ops, func(i, j int) bool {
			if f.Ops[ops[i]] != f.Ops[ops[j]] {
				return f.Ops[ops[i]] > f.Ops[ops[j]]
			}
			return ops[i] < ops[j]
		})
		parts := make([]string, len(ops))
		for i, k := range ops {
			parts[i] = fmt.Sprintf("%s=%d", k, f.Ops[k])
		}
		fmt.Fprintf(&b, "  ops: %s\n", strings.Join(parts, " "))
	}
	dts := make([]string, 0, len(s.WeightBytes))
	var total int64
	for k, v := range s.WeightBytes {
		dts = append(dts, k)
		total += v
	}
	sort.Strings(dts)
	fmt.Fprintf(&b, "weights: %d blobs, %d bytes", s.Blobs, total)
	for _, k := range dts {
		fmt.Fprintf(&b, ", %s %d", k, s.WeightBytes[k])
	}
	b.WriteString("\n")
	if len(s.Functions) > 1 {
		fmt.Fprintf(&b, "blobs shared between functions: %d of %d\n", s.SharedBlobs, s.Blobs)
	}
	if len(s.DenseWeights) > 0 {
		fmt.Fprintf(&b, "weights left dense: %s\n", strings.Join(s.DenseWeights, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
