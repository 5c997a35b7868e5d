package coreml

import (
	"fmt"

	"github.com/anemll/anemll/internal/mil"
)

// Part is one single-function package to place in a multifunction package
// under a new function name.
type Part struct {
	Function string
	Package  *Package
}

// Combine merges single-function packages into one multifunction package,
// as coremltools' save_multifunction does: each source's "main" function
// becomes a function named Part.Function with its own description, the
// first part is the default function, and the specification version is the
// highest of the sources (at least 9). Constants with identical bytes are
// stored once in the weight file when the result is written, so functions
// that share weights share blobs. Metadata is taken from the first part;
// callers adjust it.
func Combine(parts ...Part) (*Package, error) {
	if len(parts) < 2 {
		return nil, fmt.Errorf("coreml: combine needs at least two packages")
	}
	out := &Package{SpecVersion: SpecVersionIOS18, Program: mil.NewProgram()}
	seen := map[string]bool{}
	for i, part := range parts {
		src := part.Package
		if len(src.Description.Functions) != 0 || len(src.Program.Functions) != 1 {
			return nil, fmt.Errorf("coreml: combine: part %d (%s) is not a single-function package", i+1, part.Function)
		}
		if !mil.ValidIdentifier(part.Function) || seen[part.Function] {
			return nil, fmt.Errorf("coreml: combine: function name %q is invalid or repeated", part.Function)
		}
		seen[part.Function] = true
		if src.SpecVersion > out.SpecVersion {
			out.SpecVersion = src.SpecVersion
		}
		fd, err := src.Description.Function("")
		if err != nil {
			return nil, err
		}
		fd.Name = part.Function
		out.Description.Functions = append(out.Description.Functions, fd)
		f := *src.Program.Functions[0]
		f.Name = part.Function
		f.Body = detachBlobs(f.Body)
		out.Program.Functions = append(out.Program.Functions, &f)
		if i == 0 {
			out.Description.DefaultFunction = part.Function
			out.Description.Metadata = cloneMetadata(src.Description.Metadata)
			out.Program.Attrs = src.Program.Attrs
		}
	}
	return out, out.Check()
}

// detachBlobs returns a copy of b whose weight-file constants no longer
// claim a place in their source file (they keep their Source), so that the
// writer lays out blobs from several packages afresh and shares identical
// ones by content.
func detachBlobs(b *mil.Block) *mil.Block {
	nb := *b
	nb.Ops = make([]*mil.Op, len(b.Ops))
	detach := func(v *mil.Value) *mil.Value {
		if v == nil || v.BlobFile == "" {
			return v
		}
		c := *v
		c.BlobFile, c.BlobOffset = "", 0
		return &c
	}
	for i, op := range b.Ops {
		nop := *op
		nop.Attrs = make([]mil.Attr, len(op.Attrs))
		for j, a := range op.Attrs {
			nop.Attrs[j] = mil.Attr{Name: a.Name, Value: detach(a.Value)}
		}
		nop.Inputs = make([]mil.Input, len(op.Inputs))
		for j, in := range op.Inputs {
			args := make([]mil.Arg, len(in.Args))
			for k, a := range in.Args {
				args[k] = mil.Arg{Name: a.Name, Value: detach(a.Value)}
			}
			nop.Inputs[j] = mil.Input{Param: in.Param, Args: args}
		}
		nop.Blocks = make([]*mil.Block, len(op.Blocks))
		for j, blk := range op.Blocks {
			nop.Blocks[j] = detachBlobs(blk)
		}
		nb.Ops[i] = &nop
	}
	return &nb
}

func cloneMetadata(m Metadata) Metadata {
	c := m
	if m.UserDefined != nil {
		c.UserDefined = make(map[string]string, len(m.UserDefined))
		for k, v := range m.UserDefined {
			c.UserDefined[k] = v
		}
	}
	return c
}
