package pipeline

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime/debug"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
)

// combineChunk merges chunk i's FFN and prefill packages from dir into the
// FFN_PF package, with ANEMLL's combined metadata.
func combineChunk(conv Converter, dir string, i int, log io.Writer) error {
	open := func(p arch.Part) (*coreml.Package, error) {
		name, err := conv.FileName(p, i)
		if err != nil {
			return nil, err
		}
		pkg, err := coreml.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w (run steps 3 and 4 first: --restart 3)", err)
		}
		return pkg, nil
	}
	ffn, err := open(arch.PartFFN)
	if err != nil {
		return err
	}
	defer ffn.Close()
	pf, err := open(arch.PartPrefill)
	if err != nil {
		return err
	}
	defer pf.Close()
	out, err := CombinePackages(ffn, pf)
	if err != nil {
		return err
	}
	name, err := conv.FileName(arch.PartFFNPF, i)
	if err != nil {
		return err
	}
	bar := newProgress(log, "  "+name)
	err = coreml.Write(out, filepath.Join(dir, name), coreml.WriteOptions{Overwrite: true, Progress: bar.update})
	bar.finish()
	debug.FreeOSMemory()
	return err
}

// CombinePackages makes ANEMLL's multifunction FFN+prefill package:
// functions "infer" (default) and "prefill", metadata from the FFN package
// with the combined short description and the prefill batch size.
func CombinePackages(ffn, prefill *coreml.Package) (*coreml.Package, error) {
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
