package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/pipeline"
)

func init() {
	register("combine", "merge FFN and prefill chunks into multifunction FFN_PF packages", runCombine)
}

func runCombine(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("combine", stderr)
	input := fs.String("input", ".", "directory holding the FFN and prefill chunk packages")
	output := fs.String("output", "", "directory for the combined packages (default: --input)")
	prefix := fs.String("prefix", "llama", "file name prefix")
	chunks := fs.Int("chunk", 1, "number of chunks")
	var lut lutFlag
	fs.Var(&lut, "lut", "LUT bits in the file names (none, 1, 2, 3, 4, 6, 8)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *chunks < 1 {
		return fmt.Errorf("%w: anemll combine --chunk N [--lut N] [--prefix P] --input DIR [--output DIR]", errUsage)
	}
	if *output == "" {
		*output = *input
	}
	for i := 0; i < *chunks; i++ {
		name := func(p arch.Part) string {
			n, _ := arch.FileName(*prefix, p, lut.bits, i, *chunks)
			return n
		}
		ffn, err := coreml.Open(filepath.Join(*input, name(arch.PartFFN)))
		if err != nil {
			return err
		}
		pf, err := coreml.Open(filepath.Join(*input, name(arch.PartPrefill)))
		if err != nil {
			ffn.Close()
			return err
		}
		out, err := pipeline.CombinePackages(ffn, pf)
		if err == nil {
			dst := filepath.Join(*output, name(arch.PartFFNPF))
			err = coreml.Write(out, dst, coreml.WriteOptions{Overwrite: true})
			if err == nil {
				fmt.Fprintf(stdout, "wrote %s\n", dst)
			}
		}
		ffn.Close()
		pf.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
