// Package bench measures what our users wait for: LUT palettization speed
// and quality, runtime tokens per second, and a whole conversion of a
// Llama-3.2-1B-shaped checkpoint with its peak memory. Each function
// prints a table; `anemll bench` calls them.
package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/runner"
)

// LUT prints quant.BenchTable for the N(0,1) 2048×8192 matrix, every
// tensor of the checkpoint in modelDir and the matrices of one decoder layer
// of the random Llama-3.2-1B-shaped checkpoint (hf/synth), then
// quant.GroupSweep over group sizes of 1 024 … 65 536 weights on the N(0,1)
// matrix and on that layer's gate projection.
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
	layer, err := Layer1B(0)
	if err != nil {
		return err
	}
	normal := quant.NormalSet()
	sets := []quant.BenchSet{normal, {Title: modelDir, Tensors: tensors}, {Title: "Llama-3.2-1B shape (random BF16), layer 0", Tensors: layer}}
	opts := quant.Options{Workers: workers}
	if _, err := quant.BenchTable(w, sets, opts); err != nil {
		return err
	}
	for _, t := range []quant.Tensor{normal.Tensors[0], layer[4]} {
		fmt.Fprintf(w, "\ngroup-size sweep on %s %v (best of 2):\n", t.Name, t.Shape)
		if _, err := quant.GroupSweep(w, t.Data, 2, opts); err != nil {
			return err
		}
	}
	return nil
}

// Layer1B returns the matrices of decoder layer i of the random
// Llama-3.2-1B-shaped BF16 checkpoint (synth.Llama1B, the checkpoint
// Convert writes), converted to fp16, in checkpoint order: q, k, v, o,
// gate, up, down projections.
func Layer1B(i int) ([]quant.Tensor, error) {
	prefix := fmt.Sprintf("model.layers.%d.", i)
	var out []quant.Tensor
	for _, wt := range synth.Tensors(synth.Llama1B()) {
		if !strings.HasPrefix(wt.Name, prefix) || len(wt.Shape) != 2 {
			continue
		}
		var buf bytes.Buffer
		if err := wt.Data(&buf); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", wt.Name, err)
		}
		d := make([]uint16, buf.Len()/2)
		if _, err := hf.DecodeFloat16(d, buf.Bytes(), wt.DType); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", wt.Name, err)
		}
		out = append(out, quant.Tensor{Name: wt.Name, Shape: wt.Shape, Data: d})
	}
	if len(out) != 7 {
		return nil, fmt.Errorf("bench: layer %d of the 1B shape has %d matrices, want 7", i, len(out))
	}
	return out, nil
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
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tokDir, name))
		if err != nil {
			return fmt.Errorf("bench: stand-in tokenizer: %w", err)
		}
		if err := os.WriteFile(filepath.Join(model, name), b, 0o644); err != nil {
			return err
		}
	}
	rssBefore := PeakRSS()
	opts.Model, opts.Output = model, out
	if opts.NumChunks == 0 {
		opts.NumChunks = 2
	}
	if opts.LUT.FFN == 0 && opts.LUT.LMHead == 0 {
		opts.LUT.FFN, opts.LUT.LMHead = 4, 6
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
	for i := 1; i <= 7; i++ {
		fmt.Fprintf(w, "%-4d %-48s %10s %12s\n", i, pipeline.Steps[i], res.Times[i].Round(100*time.Millisecond), gib(stepRSS[i]))
	}
	fmt.Fprintf(w, "     %-48s %10s\n", "total", total.Round(100*time.Millisecond))
	top := rssBefore
	for _, r := range stepRSS {
		top = max(top, r)
	}
	fmt.Fprintf(w, "\ncheckpoint %s, output %s, peak RSS %s (%s while writing the checkpoint)\n",
		gib(pipeline.DirSize(model)), gib(pipeline.DirSize(out)), gib(top), gib(rssBefore))
	return nil
}

// RuntimeResult is one row of the runtime table.
type RuntimeResult struct {
	Model                  string
	PrefillTPS, DecodeTPS  float64
	PromptTokens, NewToken int
}

// Runtime converts a model (fp16, one chunk) into a temporary directory
// and measures prefill and decode tokens per second of the CPU interpreter
// driving it as ANEMLL's runners do: the tiny bundled model, and a random
// Llama-3.2-1B-shaped model generated on the fly when big is set.
func Runtime(w io.Writer, tmp, tinyModel string, big bool, decodeTokens int) error {
	fmt.Fprintf(w, "%-28s %14s %14s\n", "model", "prefill tok/s", "decode tok/s")
	row := func(name, model string, ctx, batch, tokens int) error {
		dir, err := os.MkdirTemp(tmp, "anemll-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		s, err := pipeline.Open(pipeline.Options{Model: model, Output: dir, ContextLength: ctx, BatchSize: batch, NumChunks: 1})
		if err != nil {
			return err
		}
		files := &runner.Files{Dir: dir}
		for _, p := range []arch.Part{arch.PartEmbeddings, arch.PartLMHead, arch.PartFFN, arch.PartPrefill} {
			path, err := s.WritePart(p, 0, dir, nil)
			if err != nil {
				s.Close()
				return err
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
			return err
		}
		prompt := make([]int, batch)
		for i := range prompt {
			prompt[i] = (i*7919 + 13) % 1000
		}
		st, err := m.Generate(prompt, tokens, runner.NewSampler(runner.Sampling{}), nil, func(int) bool { return true })
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%-28s %14.1f %14.1f\n", name, st.PrefillTokensPerSecond(), st.DecodeTokensPerSecond())
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
