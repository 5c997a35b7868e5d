package main

import (
	"fmt"
	"io"
	"os"

	"github.com/anemll/anemll/internal/bench"
	"github.com/anemll/anemll/internal/pipeline"
)

func init() {
	register("bench", "benchmarks: lut (palettization), runtime (tokens/s), convert (1B-shape pipeline, peak RSS)", runBench)
}

func runBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: anemll bench lut|runtime|convert [flags]", errUsage)
	}
	fs := newFlagSet("bench "+args[0], stderr)
	model := fs.String("model", "testdata/tiny-llama-fortunes/bf16", "checkpoint for the lut and runtime benchmarks (convert: its tokenizer stands in)")
	tmp := fs.String("tmp", os.TempDir(), "directory for temporary checkpoints and packages")
	workers := fs.Int("workers", 0, "lut: palettization workers (0 = all cores)")
	big := fs.Bool("1b", true, "runtime: also run a random Llama-3.2-1B-shaped model (writes 2.5 GB to --tmp)")
	tokens := fs.Int("tokens", 64, "runtime: tokens to decode")
	mono := fs.Bool("monolithic", false, "convert: one monolithic package (LUT4 everywhere, as convert_monolith.sh)")
	argmax := fs.Bool("argmax", false, "convert: in-model argmax LM head")
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "lut":
		return bench.LUT(stdout, *model, *workers)
	case "runtime":
		return bench.Runtime(stdout, *tmp, *model, *big, *tokens)
	case "convert":
		return bench.Convert(stdout, *tmp, *model, pipeline.Options{Log: stderr, Monolithic: *mono, Argmax: *argmax})
	}
	return fmt.Errorf("%w: unknown benchmark %q (lut, runtime, convert)", errUsage, args[0])
}
