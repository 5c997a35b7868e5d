package mil

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxPrintedElements bounds how many elements of an immediate constant the
// printer spells out before eliding the rest.
const maxPrintedElements = 16

// Print writes a readable listing of p in the spirit of Apple's model.mil:
// functions with typed inputs, every op with its inputs and output types,
// constants by value (small ones) or by weight-file dtype/shape/offset.
func Print(w io.Writer, p *Program) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "program(%d)\n", p.Version)
	for _, a := range p.Attrs {
		fmt.Fprintf(bw, "[%s = %s]\n", a.Name, formatValue(a.Value))
	}
	bw.WriteString("{\n")
	for i, f := range p.Functions {
		if i > 0 {
			bw.WriteString("\n")
		}
		printFunction(bw, f)
	}
	bw.WriteString("}\n")
	return bw.Flush()
}

func printFunction(w *bufio.Writer, f *Function) {
	ins := make([]string, len(f.Inputs))
	for i, in := range f.Inputs {
		ins[i] = in.Type.String() + " " + in.Name
	}
	fmt.Fprintf(w, "    func %s<%s>(%s) {\n", f.Name, f.Opset, strings.Join(ins, ", "))
	if f.Body != nil {
		printBlock(w, f.Body, "        ")
		fmt.Fprintf(w, "    } -> (%s);\n", strings.Join(f.Body.Outputs, ", "))
	} else {
		w.WriteString("    }\n")
	}
}

func printBlock(w *bufio.Writer, b *Block, indent string) {
	for _, op := range b.Ops {
		w.WriteString(indent)
		switch len(op.Outputs) {
		case 0:
		case 1:
			fmt.Fprintf(w, "%s %s = ", op.Outputs[0].Type, op.Outputs[0].Name)
		default:
			outs := make([]string, len(op.Outputs))
			for i, o := range op.Outputs {
				outs[i] = o.Type.String() + " " + o.Name
			}
			fmt.Fprintf(w, "(%s) = ", strings.Join(outs, ", "))
		}
		args := make([]string, len(op.Inputs))
		for i, in := range op.Inputs {
			vals := make([]string, len(in.Args))
			for j, a := range in.Args {
				if a.Value != nil {
					vals[j] = formatValue(a.Value)
				} else {
					vals[j] = a.Name
				}
			}
			v := strings.Join(vals, ", ")
			if len(in.Args) > 1 {
				v = "(" + v + ")"
			}
			args[i] = in.Param + " = " + v
		}
		attrs := []string{"name = string(" + strconv.Quote(op.Name) + ")"}
		for _, a := range op.Attrs {
			attrs = append(attrs, a.Name+" = "+formatValue(a.Value))
		}
		fmt.Fprintf(w, "%s(%s)[%s];\n", op.Type, strings.Join(args, ", "), strings.Join(attrs, ", "))
		for _, blk := range op.Blocks {
			fmt.Fprintf(w, "%s{\n", indent)
			printBlock(w, blk, indent+"    ")
			fmt.Fprintf(w, "%s} -> (%s)\n", indent, strings.Join(blk.Outputs, ", "))
		}
	}
}

// FormatValue spells a constant for the listing.
func FormatValue(v *Value) string { return formatValue(v) }

func formatValue(v *Value) string {
	if v == nil {
		return "<nil>"
	}
	t := v.Type
	switch t.Kind {
	case KindTuple, KindList:
		parts := make([]string, len(v.Elems))
		for i, e := range v.Elems {
			parts[i] = formatValue(e)
		}
		return t.String() + "(" + strings.Join(parts, ", ") + ")"
	case KindDict:
		parts := make([]string, len(v.Entries))
		for i, e := range v.Entries {
			parts[i] = "{" + formatValue(e.Key) + ", " + formatValue(e.Value) + "}"
		}
		return t.String() + "({" + strings.Join(parts, ", ") + "})"
	case KindTensor:
	default:
		return t.String()
	}
	if v.BlobFile != "" {
		return fmt.Sprintf("%s(BLOBFILE(path = string(%q), offset = uint64(%d)))", t, v.BlobFile, v.BlobOffset)
	}
	if v.Data == nil && v.Source != nil || v.WantsBlob() && v.Storage != StorageImmediate {
		return fmt.Sprintf("%s(BLOB(%d bytes))", t, t.DType.ByteLen(max(t.NumElements(), 0)))
	}
	scalar := t.Rank() == 0
	var elems []string
	switch {
	case t.DType == String:
		for _, s := range v.Strings {
			elems = append(elems, strconv.Quote(s))
		}
		if scalar && len(elems) == 1 {
			return "string(" + elems[0] + ")"
		}
	case t.DType == Bool:
		for _, b := range v.Data {
			elems = append(elems, strconv.FormatBool(b != 0))
		}
	case t.DType.IsFloat():
		f, err := v.Floats()
		if err != nil {
			return t.String() + "(<" + err.Error() + ">)"
		}
		for _, x := range f {
			elems = append(elems, strconv.FormatFloat(float64(x), 'g', -1, 32))
		}
	default:
		n, err := v.Ints()
		if err != nil {
			return t.String() + "(<" + err.Error() + ">)"
		}
		for _, x := range n {
			elems = append(elems, strconv.FormatInt(x, 10))
		}
	}
	if len(elems) > maxPrintedElements {
		elems = append(elems[:maxPrintedElements], fmt.Sprintf("... %d more", len(elems)-maxPrintedElements))
	}
	if scalar && len(elems) == 1 {
		return t.DType.String() + "(" + elems[0] + ")"
	}
	return t.String() + "([" + strings.Join(elems, ", ") + "])"
}
