// Package bench measures what our users wait for: LUT palettization speed
// and quality, runtime tokens per second, and a whole conversion of a
// Llama-3.2-1B-shaped checkpoint with its peak memory. Each function
// prints a table; `anemll bench` calls them.
package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/runner"
)

// LUT prints quant.BenchTable for the N(0,1) 2048×8192 matrix and every
// weight of the checkpoint in modelDir.
func LUT(w io.Writer, modelDir string, workers int) error {
	ck, err := hf.OpenCheckpoint(modelDir)
	if err != nil {
		return err
	}
	defer ck.Close()
	var tensors []quant.Tensor
	for _, name := range ck.Names() {
		info, _ := ck.Info(name)
		data, _, err := ck.Float16(name)
		if err != nil {
			return err
		}
		tensors = append(tensors, quant.Tensor{Name: name, Shape: info.Shape, Data: data})
	}
	_, err = quant.BenchTable(w, tensors, quant.Options{Workers: workers})
	return err
}

// ResetPeakRSS restarts the kernel's peak-RSS counter (Linux
// /proc/self/clear_refs), so PeakRSS then reports the peak since now.
func ResetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// PeakRSS returns the process's peak resident set size in bytes (Linux
// VmHWM), or 0 where unknown.
func PeakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }

// Convert writes a random Llama-3.2-1B-shaped BF16 checkpoint into a
// temporary directory under tmp (with the tokenizer files of tokDir as a
// stand-in tokenizer), runs the whole pipeline on it with ANEMLL's default
// flags (or opts' overrides), and prints wall time per step, output sizes
// and peak RSS.
func Convert(w io.Writer, tmp, tokDir string, opts pipeline.Options) error {
	dir, err := os.MkdirTemp(tmp, "anemll-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	model, out := filepath.Join(dir, "llama-1b-random"), filepath.Join(dir, "out")
	fmt.Fprintf(w, "writing a random Llama-3.2-1B-shaped BF16 checkpoint to %s ...\n", model)
	start := time.Now()
	if err := synth.Write(model, synth.Llama1B()); err != nil {
		return err
	}
	fmt.Fprintf(w, "checkpoint written in %s (%s)\n", time.Since(start).Round(time.Second), gib(pipeline.DirSize(model)))
	if err := standInTokenizer(w, tokDir, model); err != nil {
		return err
	}
	rssBefore := PeakRSS()
	opts.Model, opts.Output = model, out
	names := pipeline.Steps
	switch {
	case opts.Monolithic:
		// convert_monolith.sh's default: LUT4 for every part.
		names = pipeline.MonolithicSteps
		if opts.LUT == (decoder.LUTBits{}) {
			opts.LUT = decoder.LUTBits{Embeddings: 4, FFN: 4, LMHead: 4}
		}
	default:
		if opts.NumChunks == 0 {
			opts.NumChunks = 2
		}
		if opts.LUT.FFN == 0 && opts.LUT.LMHead == 0 {
			opts.LUT.FFN, opts.LUT.LMHead = 4, 6
		}
	}
	opts.SkipCheck = true
	var stepRSS [9]int64
	opts.StepHook = func(step int, done bool) {
		if !done {
			ResetPeakRSS()
			return
		}
		stepRSS[step] = PeakRSS()
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	start = time.Now()
	res, err := pipeline.Run(opts)
	if err != nil {
		return err
	}
	total := time.Since(start)
	fmt.Fprintf(w, "\n%-4s %-48s %10s %12s\n", "step", "", "wall", "peak RSS")
	for i := 1; i < len(names)-1; i++ {
		fmt.Fprintf(w, "%-4d %-48s %10s %12s\n", i, names[i], res.Times[i].Round(100*time.Millisecond), gib(stepRSS[i]))
	}
	fmt.Fprintf(w, "     %-48s %10s\n", "total", total.Round(100*time.Millisecond))
	top := rssBefore
	for _, r := range stepRSS {
		top = max(top, r)
	}
	fmt.Fprintf(w, "\ncheckpoint %s, output %s, peak RSS %s (%s while writing the checkpoint)\n",
		gib(pipeline.DirSize(model)), gib(pipeline.DirSize(out)), gib(top), gib(rssBefore))
	for _, f := range res.Files {
		if strings.HasSuffix(f, ".mlpackage") {
			fmt.Fprintf(w, "  %-48s %s\n", f, gib(pipeline.DirSize(filepath.Join(out, f))))
		}
	}
	return nil
}

// minimalTokenizer is a valid byte-level BPE tokenizer.json with no
// vocabulary: enough for the pipeline, which only copies tokenizer files
// (the benchmark skips verification).
const minimalTokenizer = `{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,` +
	`"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},` +
	`"post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},` +
	`"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,` +
	`"fuse_unk":false,"byte_fallback":false,"vocab":{},"merges":[]}}`

// standInTokenizer copies tokDir's tokenizer files into model, or, when
// tokDir has none (the benchmark run outside the repository), writes a
// minimal tokenizer.json, so the benchmark works from any directory.
func standInTokenizer(w io.Writer, tokDir, model string) error {
	copied := 0
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tokDir, name))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(model, name), b, 0o644); err != nil {
			return err
		}
		copied++
	}
	if copied > 0 {
		return nil
	}
	fmt.Fprintf(w, "note: no tokenizer in %s; using a minimal stand-in tokenizer.json (the benchmark only copies it)\n", tokDir)
	return os.WriteFile(filepath.Join(model, "tokenizer.json"), []byte(minimalTokenizer), 0o644)
}

// RuntimeResult is one row of the runtime table.
type RuntimeResult struct {
	Model                  string
	PrefillTPS, DecodeTPS  float64
	PromptTokens, NewToken int
}

// runtimeRun is one measured generation of the runtime benchmark.
type runtimeRun struct {
	prompt, tokens []int
	stats          runner.GenerateStats
}

// runtimeRow converts model (fp16, one chunk) into a directory under tmp
// and generates tokens greedily after a batch-long prompt.
func runtimeRow(tmp, model string, ctx, batch, tokens int) (*runtimeRun, error) {
	dir, err := os.MkdirTemp(tmp, "anemll-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	s, err := pipeline.Open(pipeline.Options{Model: model, Output: dir, ContextLength: ctx, BatchSize: batch, NumChunks: 1})
	if err != nil {
		return nil, err
	}
	files := &runner.Files{Dir: dir}
	for _, p := range []arch.Part{arch.PartEmbeddings, arch.PartLMHead, arch.PartFFN, arch.PartPrefill} {
		path, err := s.WritePart(p, 0, dir, nil)
		if err != nil {
			s.Close()
			return nil, err
		}
		switch p {
		case arch.PartEmbeddings:
			files.Embeddings = path
		case arch.PartLMHead:
			files.LMHead = path
		case arch.PartFFN:
			files.Chunks = []runner.ChunkFiles{{FFN: path}}
		case arch.PartPrefill:
			files.Chunks[0].Prefill = path
		}
	}
	s.Close()
	m, err := runner.Load(files)
	if err != nil {
		return nil, err
	}
	r := &runtimeRun{prompt: make([]int, batch)}
	for i := range r.prompt {
		r.prompt[i] = (i*7919 + 13) % 1000
	}
	r.stats, err = m.Generate(r.prompt, tokens, runner.NewSampler(runner.Sampling{}), nil, func(id int) bool {
		r.tokens = append(r.tokens, id)
		return true
	})
	return r, err
}

// Runtime converts a model (fp16, one chunk) into a temporary directory
// and measures prefill and decode tokens per second of the CPU interpreter
// driving it as ANEMLL's runners do: the tiny bundled model, and a random
// Llama-3.2-1B-shaped model generated on the fly when big is set.
func Runtime(w io.Writer, tmp, tinyModel string, big bool, decodeTokens int) error {
	fmt.Fprintf(w, "%-28s %14s %14s\n", "model", "prefill tok/s", "decode tok/s")
	row := func(name, model string, ctx, batch, tokens int) error {
		r, err := runtimeRow(tmp, model, ctx, batch, tokens)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%-28s %14.1f %14.1f\n", name, r.stats.PrefillTokensPerSecond(), r.stats.DecodeTokensPerSecond())
		return nil
	}
	if err := row("tiny-llama-fortunes (fp16)", tinyModel, 512, 64, decodeTokens); err != nil {
		return err
	}
	if !big {
		return nil
	}
	dir, err := os.MkdirTemp(tmp, "anemll-bench-1b-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	model := filepath.Join(dir, "llama-1b-random")
	if err := synth.Write(model, synth.Llama1B()); err != nil {
		return err
	}
	return row("Llama-3.2-1B shape (fp16)", model, 512, 64, max(4, decodeTokens/4))
}
