// Command rtprobe measures the CPU interpreter's memory and speed on a
// converted model, the runtime part of a `verify` or `chat` run:
//
//	rtprobe make -out DIR [-lut]   # random Llama-3.2-1B-shaped model → DIR/pkg
//	rtprobe run -dir DIR/pkg [-decode N] [-low] [-heap FILE] [-cpu FILE]
//
// run loads the packages, prefills one 64-token batch and decodes N greedy
// tokens, printing load time, resident memory after loading, peak resident
// memory (Linux VmHWM) and tokens per second.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	rt "runtime"
	"runtime/pprof"
	"time"

	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/bench"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/runner"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rtprobe make|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "make":
		err = makeModel(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (make, run)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtprobe:", err)
		os.Exit(1)
	}
}

func makeModel(args []string) error {
	fs := flag.NewFlagSet("make", flag.ExitOnError)
	out := fs.String("out", "", "directory to create")
	lut := fs.Bool("lut", false, "LUT4 FFN, LUT6 LM head, 2 chunks (default: fp16, 1 chunk)")
	tok := fs.String("tokenizer", "testdata/tiny-llama-fortunes/bf16", "stand-in tokenizer directory")
	fs.Parse(args)
	if *out == "" {
		return fmt.Errorf("make: -out is required")
	}
	ck := filepath.Join(*out, "ckpt")
	if _, err := os.Stat(ck); err != nil {
		if err := synth.Write(ck, synth.Llama1B()); err != nil {
			return err
		}
		for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
			b, err := os.ReadFile(filepath.Join(*tok, name))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(ck, name), b, 0o644); err != nil {
				return err
			}
		}
	}
	opts := pipeline.Options{Model: ck, Output: filepath.Join(*out, "pkg"), ContextLength: 512, BatchSize: 64, NumChunks: 1, SkipCheck: true, Log: io.Discard}
	if *lut {
		opts.NumChunks, opts.LUT = 2, decoder.LUTBits{FFN: 4, LMHead: 6}
	}
	_, err := pipeline.Run(opts)
	return err
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	dir := fs.String("dir", "", "directory of converted packages")
	decode := fs.Int("decode", 8, "tokens to decode")
	heap := fs.String("heap", "", "write a heap profile after loading to this file")
	cpu := fs.String("cpu", "", "write a CPU profile of generation to this file")
	low := fs.Bool("low", false, "low-memory mode (one chunk loaded at a time)")
	fs.Parse(args)
	files, err := runner.FindFiles(*dir)
	if err != nil {
		return err
	}
	start := time.Now()
	m, err := runner.LoadWith(files, runner.LoadOptions{LowMemory: *low})
	if err != nil {
		return err
	}
	load := time.Since(start)
	loadRSS := bench.PeakRSS()
	if *heap != "" {
		rt.GC()
		f, err := os.Create(*heap)
		if err != nil {
			return err
		}
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	prompt := make([]int, 64)
	for i := range prompt {
		prompt[i] = (i*7919 + 13) % 1000
	}
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	st, err := m.Generate(prompt, *decode, runner.NewSampler(runner.Sampling{}), nil, func(int) bool { return true })
	if err != nil {
		return err
	}
	fmt.Printf("load %.1fs  peak RSS after load %.2f GiB  peak RSS %.2f GiB  prefill %.1f tok/s  decode %.2f tok/s\n",
		load.Seconds(), float64(loadRSS)/(1<<30), float64(bench.PeakRSS())/(1<<30), st.PrefillTokensPerSecond(), st.DecodeTokensPerSecond())
	return nil
}
