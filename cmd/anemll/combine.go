package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/pipeline"
)

func init() {
	register("combine", "merge FFN and prefill chunks into multifunction FFN_PF packages", runCombine)
}

const combineSynopsis = "anemll combine --chunk N [--lut N] [--prefix P] --input DIR [--output DIR]"

func runCombine(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSetUsage("combine", "usage: "+combineSynopsis, stderr)
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
		return fmt.Errorf("%w: %s", errUsage, combineSynopsis)
	}
	if *output == "" {
		*output = *input
	}
	for i := 0; i < *chunks; i++ {
		var paths [3]string
		for k, p := range []arch.Part{arch.PartFFN, arch.PartPrefill, arch.PartFFNPF} {
			n, err := arch.FileName(*prefix, p, lut.bits, i, *chunks)
			if err != nil {
				return err
			}
			dir := *input
			if p == arch.PartFFNPF {
				dir = *output
			}
			paths[k] = filepath.Join(dir, n)
		}
		if err := pipeline.CombineFiles(paths[0], paths[1], paths[2], stderr); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", paths[2])
	}
	return nil
}
