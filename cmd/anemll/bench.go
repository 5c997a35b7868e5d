package main

import (
	"fmt"
	"github.com/anemll/anemll/internal/verify"
	"io"
	"os"
	"strings"

	"github.com/anemll/anemll/internal/bench"
	"github.com/anemll/anemll/internal/pipeline"
)

func init() {
	register("bench", "benchmarks: lut (palettization), runtime (tokens/s), convert (mid-size and 1B-shape pipeline vs. the I/O floor, peak RSS)", runBench)
}

func runBench(args []string, stdout, stderr io.Writer) error {
	const synopsis = "anemll bench lut|runtime|convert [flags]"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, synopsis)
	}
	name, flagArgs := args[0], args[1:]
	if strings.HasPrefix(name, "-") {
		// Flags first (anemll bench -h): parse them all, then ask for
		// the benchmark.
		name, flagArgs = "", args
	}
	fs := newFlagSetUsage(strings.TrimSpace("bench "+name), "usage: "+synopsis, stderr)
	model := fs.String("model", "testdata/tiny-llama-fortunes/bf16", "checkpoint for the lut and runtime benchmarks")
	tmp := fs.String("tmp", os.TempDir(), "directory for temporary checkpoints and packages")
	workers := fs.Int("workers", 0, "lut: palettization workers (0 = all cores)")
	big := fs.Bool("1b", true, "runtime: also run a random Llama-3.2-1B-shaped model (writes 2.5 GB to --tmp)")
	tokens := fs.Int("tokens", 64, "runtime: tokens to decode")
	shapes := fs.String("shape", "mid,1b", "convert: checkpoint shapes, comma-separated: mid (hidden 512, 4 layers, vocab 8192), 1b (Llama-3.2-1B; writes 2.5 GB to --tmp), 8b (Llama-3.1-8B; 16 GB), qwen3-0.6b, gemma3-1b")
	mono := fs.Bool("monolithic", false, "convert: one monolithic package (LUT4 everywhere, as convert_monolith.sh)")
	argmax := fs.Bool("argmax", false, "convert: in-model argmax LM head")
	check := fs.Bool("verify", false, "convert: run step 8 too, on a short prompt")
	calText := fs.String("calibration", "", "convert: calibrate the palettes on this UTF-8 text (tokenized with the stand-in tokenizer)")
	calTokens := fs.Int("calibration-tokens", 0, "convert: calibration tokens (default as convert)")
	if _, err := parseFlags(fs, flagArgs); err != nil {
		return err
	}
	switch name {
	case "":
		return fmt.Errorf("%w: %s: name the benchmark first", errUsage, synopsis)
	case "lut":
		return bench.LUT(stdout, *model, *workers)
	case "runtime":
		return bench.Runtime(stdout, *tmp, *model, *big, *tokens)
	case "convert":
		var list []bench.Shape
		for _, name := range strings.Split(*shapes, ",") {
			mk, ok := bench.Shapes[strings.TrimSpace(name)]
			if !ok {
				return fmt.Errorf("%w: --shape %q: want mid, 1b, 8b, qwen3-0.6b or gemma3-1b (comma-separated)", errUsage, name)
			}
			list = append(list, mk())
		}
		var vf func(model, dir, text string, out io.Writer) error
		if *check {
			vf = func(model, dir, text string, out io.Writer) error {
				return verify.DirectoryWith(model, dir, text, out, verify.Options{Progress: stderr})
			}
		}
		return bench.Convert(stdout, *tmp, list, pipeline.Options{Log: io.Discard, Monolithic: *mono, Argmax: *argmax,
			Calibration: *calText, CalibrationTokens: *calTokens}, vf)
	}
	return fmt.Errorf("%w: unknown benchmark %q (lut, runtime, convert)", errUsage, args[0])
}
