// Package bench measures what our users wait for: LUT palettization speed
// and quality, runtime tokens per second, and a whole conversion of a
// Llama-3.2-1B-shaped checkpoint with its peak memory. Each function
// prints a table; `anemll bench` calls them.
package bench

import (
	"bufio"
	"bytes"
	"embed"
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
	"github.com/anemll/anemll/internal/tempdir"
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

// Shape is a checkpoint shape for Convert.
type Shape struct {
	Name string
	Opts synth.Options
}

// MidSize is the mid-size benchmark shape: hidden 512, intermediate 2048,
// 4 layers, 8 heads / 2 KV heads, vocabulary 8192, untied embeddings
// (about 23.6 M parameters, BF16).
func MidSize() Shape {
	return Shape{Name: "mid-size", Opts: synth.Options{Hidden: 512, Intermediate: 2048, Layers: 4, Heads: 8, KVHeads: 2,
		Vocab: 8192, MaxPositions: 2048, Seed: 1}}
}

// Llama1B is the random Llama-3.2-1B shape (synth.Llama1B).
func Llama1B() Shape { return Shape{Name: "Llama-3.2-1B", Opts: synth.Llama1B()} }

// Qwen3_06B is the random Qwen3-0.6B shape (synth.Qwen3_06B).
func Qwen3_06B() Shape { return Shape{Name: "Qwen3-0.6B", Opts: synth.Qwen3_06B()} }

// Gemma3_1B is the random Gemma-3-1B shape (synth.Gemma3_1B).
func Gemma3_1B() Shape { return Shape{Name: "Gemma-3-1B", Opts: synth.Gemma3_1B()} }

// Llama8B is the random Llama-3.1-8B shape (synth.Llama8B; 16 GB).
func Llama8B() Shape { return Shape{Name: "Llama-3.1-8B", Opts: synth.Llama8B()} }

// Shapes maps the --shape names of `anemll bench convert` to shapes.
var Shapes = map[string]func() Shape{"mid": MidSize, "1b": Llama1B, "8b": Llama8B, "qwen3-0.6b": Qwen3_06B, "gemma3-1b": Gemma3_1B}

// VerifyText is the short prompt step 8 checks when the convert benchmark
// runs it (Convert's verify argument).
const VerifyText = "The quick brown fox jumps over the lazy dog."

//go:embed standin/tokenizer.json standin/tokenizer_config.json
var standin embed.FS

// StepIO is what one pipeline step read and wrote, for the I/O floor.
type StepIO struct {
	Read, Written int64
}

// Convert writes a random BF16 checkpoint of each shape into a temporary
// directory under tmp (with the bundled model's tokenizer files as a
// stand-in tokenizer, carried in the binary), runs the whole pipeline
// (steps 1–7, --skip-check) on it with ANEMLL's default flags (or opts'
// overrides), and prints per step: wall time, the bytes it read and wrote,
// the I/O floor (the time this machine takes just to read those bytes of
// the checkpoint or earlier packages, page cache warm as in the run, and
// to write and fsync the output bytes, measured right after the run) and
// the ratio of the two, and peak RSS.
//
// With verify set, step 8 runs too, on VerifyText, with the lazy
// reference and the bounded-memory runtime; its time and peak RSS are
// printed with the others.
func Convert(w io.Writer, tmp string, shapes []Shape, opts pipeline.Options, verify func(model, dir, text string, out io.Writer) error) error {
	for i, sh := range shapes {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := convertShape(w, tmp, sh, opts, verify); err != nil {
			return fmt.Errorf("bench: %s: %w", sh.Name, err)
		}
	}
	return nil
}

func convertShape(w io.Writer, tmp string, sh Shape, opts pipeline.Options, verify func(model, dir, text string, out io.Writer) error) error {
	dir, err := os.MkdirTemp(tmp, "anemll-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer tempdir.Track(dir)()
	model, out := filepath.Join(dir, "model"), filepath.Join(dir, "out")
	fmt.Fprintf(w, "%s: writing a random BF16 checkpoint to %s ...\n", sh.Name, model)
	start := time.Now()
	if err := synth.Write(model, sh.Opts); err != nil {
		return err
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := standin.ReadFile("standin/" + name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(model, name), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "checkpoint written in %s (%s)\n", time.Since(start).Round(10*time.Millisecond), gib(pipeline.DirSize(model)))
	tensorBytes, err := checkpointBytes(model)
	if err != nil {
		return err
	}
	rssBefore := PeakRSS()
	o := opts
	o.Model, o.Output = model, out
	names := pipeline.Steps
	switch {
	case o.Monolithic:
		// convert_monolith.sh's default: LUT4 for every part.
		names = pipeline.MonolithicSteps
		if o.LUT == (decoder.LUTBits{}) {
			o.LUT = decoder.LUTBits{Embeddings: 4, FFN: 4, LMHead: 4}
		}
	default:
		if o.NumChunks == 0 {
			o.NumChunks = 2
		}
		if o.LUT.FFN == 0 && o.LUT.LMHead == 0 {
			o.LUT.FFN, o.LUT.LMHead = 4, 6
		}
	}
	o.SkipCheck = verify == nil
	var report strings.Builder
	var verifyErr error // a failed check still gets its table printed
	if verify != nil {
		o.Verify = func(dir string) error {
			verifyErr = verify(model, dir, VerifyText, &report)
			return nil
		}
	}
	last := len(names) - 2 // the last step before verification
	if verify != nil {
		last++
	}
	var stepRSS [9]int64
	var sio [9]StepIO
	var sizeBefore int64
	o.StepHook = func(step int, done bool) {
		if !done {
			ResetPeakRSS()
			sizeBefore = pipeline.DirSize(out)
			return
		}
		stepRSS[step] = PeakRSS()
		sio[step].Written = pipeline.DirSize(out) - sizeBefore
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	start = time.Now()
	res, err := pipeline.Run(o)
	if err != nil {
		return err
	}
	total := time.Since(start)
	// What each step reads: the checkpoint's tensors for the part it
	// converts (steps 1–3), the packages of step 3 (step 4 reuses their
	// palettes) and of steps 3 and 4 (step 5 combines them), the tokenizer
	// files (step 7).
	if o.Monolithic {
		// Monolithic: infer reads every tensor, prefill the infer
		// package's palettes, combine both packages.
		sio[1].Read = tensorBytes.embed + tensorBytes.head + tensorBytes.layers
		sio[2].Read = sio[1].Written
		sio[3].Read = sio[1].Written + sio[2].Written
		sio[5].Read = tensorBytes.tokenizer
	} else {
		sio[1].Read = tensorBytes.embed
		sio[2].Read = tensorBytes.head
		sio[3].Read = tensorBytes.layers
		sio[4].Read = sio[3].Written
		sio[5].Read = sio[3].Written + sio[4].Written
		sio[7].Read = tensorBytes.tokenizer
	}
	if o.Calibration != "" {
		sio[0].Read = tensorBytes.layers // the statistics read every layer once
	}
	readBW, writeBW, err := ioSpeed(model, dir, pipeline.DirSize(out))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "this machine: reads the checkpoint at %.2f GB/s (page cache warm), writes+fsyncs at %.2f GB/s\n", readBW/1e9, writeBW/1e9)
	fmt.Fprintf(w, "\n%-4s %-48s %9s %9s %9s %10s %7s %10s\n", "step", "", "wall", "read", "written", "I/O floor", "ratio", "peak RSS")
	var floorTotal float64
	for i := 0; i <= last; i++ { // step 0: opening (checks, fp16 scale, calibration statistics)
		floor := float64(sio[i].Read)/readBW + float64(sio[i].Written)/writeBW
		floorTotal += floor
		name := names[i]
		if i == 0 {
			name = "Opening: checks, fp16 scale, statistics"
		}
		fmt.Fprintf(w, "%-4d %-48s %9s %9s %9s %9.2fs %7s %10s\n", i, name, sec(res.Times[i]), mb(sio[i].Read), mb(sio[i].Written),
			floor, ratio(res.Times[i].Seconds(), floor), gib(stepRSS[i]))
	}
	fmt.Fprintf(w, "     %-48s %9s %9s %9s %9.2fs %7s\n", "total", sec(total), "", "", floorTotal, ratio(total.Seconds(), floorTotal))
	top := rssBefore
	for _, r := range stepRSS {
		top = max(top, r)
	}
	fmt.Fprintf(w, "\n%s: checkpoint %s, output %s, steps 0-%d in %s, peak RSS %s (%s while writing the checkpoint)\n",
		sh.Name, gib(pipeline.DirSize(model)), gib(pipeline.DirSize(out)), last, sec(total), gib(top), gib(rssBefore))
	if report.Len() > 0 {
		fmt.Fprintf(w, "step 8 on %q:\n%s", VerifyText, report.String())
	}
	for _, f := range res.Files {
		if strings.HasSuffix(f, ".mlpackage") {
			fmt.Fprintf(w, "  %-48s %s\n", f, gib(pipeline.DirSize(filepath.Join(out, f))))
		}
	}
	if verifyErr != nil {
		return fmt.Errorf("step 8: %w", verifyErr)
	}
	return nil
}

func sec(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func mb(n int64) string {
	switch {
	case n == 0:
		return "-"
	case n < 10e6:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// ckptBytes is the checkpoint's tensor bytes by the step that reads them.
type ckptBytes struct{ embed, head, layers, tokenizer int64 }

func checkpointBytes(model string) (ckptBytes, error) {
	ck, err := hf.OpenCheckpoint(model)
	if err != nil {
		return ckptBytes{}, err
	}
	defer ck.Close()
	var b ckptBytes
	var embed, lmHead int64
	for _, name := range ck.Names() {
		info, _ := ck.Info(name)
		switch {
		case name == "model.embed_tokens.weight":
			embed = info.Size
		case name == "lm_head.weight":
			lmHead = info.Size
		case name == "model.norm.weight":
			b.head += info.Size
		default:
			b.layers += info.Size
		}
	}
	b.embed = embed
	if lmHead > 0 {
		b.head += lmHead
	} else {
		b.head += embed // tied: the LM head reads the embedding table
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if st, err := os.Stat(filepath.Join(model, name)); err == nil {
			b.tokenizer += st.Size()
		}
	}
	return b, nil
}

// ioSpeed measures this machine's read speed over the checkpoint files of
// model (as the run saw them: just written, so in the page cache) and its
// speed writing n bytes (in 4 MiB writes, then fsync) to a file in dir,
// which is removed. Both in bytes per second.
func ioSpeed(model, dir string, n int64) (read, write float64, err error) {
	buf := make([]byte, 4<<20)
	ents, err := os.ReadDir(model)
	if err != nil {
		return 0, 0, err
	}
	var got int64
	start := time.Now()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".safetensors") {
			continue
		}
		f, err := os.Open(filepath.Join(model, e.Name()))
		if err != nil {
			return 0, 0, err
		}
		for {
			k, err := f.Read(buf)
			got += int64(k)
			if err != nil {
				break
			}
		}
		f.Close()
	}
	read = float64(got) / max(time.Since(start).Seconds(), 1e-9)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	name := filepath.Join(dir, "floor.bin")
	f, err := os.Create(name)
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(name)
	start = time.Now()
	for left := n; left > 0; {
		k := int64(len(buf))
		if left < k {
			k = left
		}
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return 0, 0, err
		}
		left -= k
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, 0, err
	}
	if err := f.Close(); err != nil {
		return 0, 0, err
	}
	write = float64(n) / max(time.Since(start).Seconds(), 1e-9)
	return read, write, nil
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
	defer tempdir.Track(dir)()
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
	defer tempdir.Track(dir)()
	model := filepath.Join(dir, "llama-1b-random")
	if err := synth.Write(model, synth.Llama1B()); err != nil {
		return err
	}
	return row("Llama-3.2-1B shape (fp16)", model, 512, 64, max(4, decodeTokens/4))
}
