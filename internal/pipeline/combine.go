package pipeline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
)

// combineChunk merges chunk i's FFN and prefill packages from dir into the
// FFN_PF package, with ANEMLL's combined metadata.
func combineChunk(conv Converter, dir string, i int, log io.Writer) error {
	var names [3]string
	for k, p := range []arch.Part{arch.PartFFN, arch.PartPrefill, arch.PartFFNPF} {
		n, err := conv.FileName(p, i)
		if err != nil {
			return err
		}
		names[k] = filepath.Join(dir, n)
	}
	err := CombineFiles(names[0], names[1], names[2], log)
	if err != nil && errors.Is(err, os.ErrNotExist) {
		err = fmt.Errorf("%w (run steps 3 and 4 first: --restart 3)", err)
	}
	return err
}

// CombineFiles reads an FFN and a prefill package, merges them with
// CombinePackages and writes the result to out (replacing it), showing
// progress on log.
func CombineFiles(ffnPath, prefillPath, out string, log io.Writer) error {
	ffn, err := coreml.Open(ffnPath)
	if err != nil {
		return err
	}
	defer ffn.Close()
	pf, err := coreml.Open(prefillPath)
	if err != nil {
		return err
	}
	defer pf.Close()
	pkg, err := CombinePackages(ffn, pf)
	if err != nil {
		return fmt.Errorf("%w (%s, %s)", err, ffnPath, prefillPath)
	}
	bar := newProgress(log, "  "+filepath.Base(out))
	err = coreml.Write(pkg, out, coreml.WriteOptions{Overwrite: true, Progress: bar.update})
	bar.finish()
	debug.FreeOSMemory()
	return err
}

// CombinePackages makes ANEMLL's multifunction FFN+prefill package:
// functions "infer" (default) and "prefill", metadata from the FFN package
// with the combined short description and the prefill batch size.
func CombinePackages(ffn, prefill *coreml.Package) (*coreml.Package, error) {
	if err := sameModel(ffn, prefill); err != nil {
		return nil, err
	}
	out, err := coreml.Combine(coreml.Part{Function: "infer", Package: ffn}, coreml.Part{Function: "prefill", Package: prefill})
	if err != nil {
		return nil, err
	}
	md := &out.Description.Metadata
	md.ShortDescription = "Anemll Model: Multifunction FFN+Prefill"
	if md.UserDefined == nil {
		md.UserDefined = map[string]string{}
	}
	if b, ok := prefill.Description.Metadata.UserDefined["com.anemll.batch_size"]; ok {
		md.UserDefined["com.anemll.batch_size"] = b
	}
	return out, nil
}

// sameModel checks that an FFN and a prefill chunk can share one KV-cache
// state, as ANEMLL's runners use them: the same state declarations (name,
// type, shape) and the same hidden width. Chunks from different
// conversions (another checkpoint, context or chunking) fail here instead
// of making a package whose two functions disagree.
func sameModel(ffn, prefill *coreml.Package) error {
	a, err := ffn.Description.Function("")
	if err != nil {
		return err
	}
	b, err := prefill.Description.Function("")
	if err != nil {
		return err
	}
	const fix = "the FFN and prefill chunks come from different conversions; convert both from the same checkpoint with the same flags"
	if len(a.States) != len(b.States) {
		return fmt.Errorf("pipeline: combine: the FFN chunk declares %d state(s), the prefill chunk %d: %s", len(a.States), len(b.States), fix)
	}
	for i, sa := range a.States {
		sb := b.States[i]
		if sa.Name != sb.Name || sa.DType != sb.DType || !slices.Equal(sa.Shape, sb.Shape) {
			return fmt.Errorf("pipeline: combine: the FFN chunk's state %s is %v %v, the prefill chunk's %s is %v %v: %s",
				sa.Name, sa.DType, sa.Shape, sb.Name, sb.DType, sb.Shape, fix)
		}
	}
	width := func(fd coreml.FunctionDescription) int64 {
		for _, in := range fd.Inputs {
			if in.Name == "hidden_states" && len(in.Shape) > 0 {
				return in.Shape[len(in.Shape)-1]
			}
		}
		return 0
	}
	if wa, wb := width(a), width(b); wa != wb {
		return fmt.Errorf("pipeline: combine: the FFN chunk's hidden_states are %d wide, the prefill chunk's %d: %s", wa, wb, fix)
	}
	return nil
}
