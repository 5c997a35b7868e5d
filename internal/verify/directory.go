package verify

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tokenizer"
)

// DefaultText is the prompt verification uses when none is given.
const DefaultText = `Q: What is the difference between a duck and a computer?
A: One of them quacks when you least expect it.
The programmer looked at the screen for a long time, then said: "It works on my machine." -- Anonymous
Never put off until tomorrow what you can do the day after tomorrow. Work expands to fill the time available for its completion, and the cat sleeps on the keyboard anyway.`

// LoadTokenizer loads the tokenizer from the first of dirs that has a
// tokenizer.json.
func LoadTokenizer(dirs ...string) (*tokenizer.Tokenizer, error) {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "tokenizer.json")); err == nil {
			return tokenizer.Load(d)
		}
	}
	return nil, fmt.Errorf("verify: no tokenizer.json in %v", dirs)
}

// Options tune RunWith and DirectoryWith.
type Options struct {
	// LowMemory forces the runner's low-memory mode (one chunk's weights
	// loaded at a time; see runner.LoadOptions). Without it the mode is
	// chosen as runner.Load chooses it: when memory is short.
	LowMemory bool
	// Progress, if set, receives a line now and then while the long
	// phases run (the reference passes, the package runs).
	Progress io.Writer
}

// Run loads the packages in files and the reference of the checkpoint in
// modelDir (with the packages' own weights if packageWeights), compares
// them on ids (cut to the context length) and prints the table to out.
func Run(modelDir string, files *runner.Files, ids []int, packageWeights bool, out io.Writer) (*Report, error) {
	return RunWith(modelDir, files, ids, packageWeights, out, Options{})
}

// RunWith is Run with options.
func RunWith(modelDir string, files *runner.Files, ids []int, packageWeights bool, out io.Writer, opt Options) (*Report, error) {
	reps, err := run(modelDir, files, ids, []bool{packageWeights}, out, opt)
	if err != nil {
		return nil, err
	}
	return reps[0], nil
}

// run compares the packages with one reference per entry of
// packageWeights (true: the packages' own weights, false: the
// checkpoint's), printing a table for each. The references run first,
// one at a time and one layer at a time, and only their logits are kept;
// the packages are loaded after, so the two never hold memory at once.
func run(modelDir string, files *runner.Files, ids []int, packageWeights []bool, out io.Writer, opt Options) ([]*Report, error) {
	// The live heap is one float32 layer at a time, then the packages'
	// weights: collect garbage at 20 % growth instead of Go's default
	// 100 %, so a big model's peak stays near what is really live.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	if err := runner.CheckMemory(files); err != nil {
		return nil, err
	}
	cfg, err := hf.LoadConfig(modelDir)
	if err != nil {
		return nil, err
	}
	ck, err := hf.OpenCheckpoint(modelDir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	ctx, err := runner.PeekContextLength(files)
	if err != nil {
		return nil, err
	}
	if len(ids) > ctx {
		ids = ids[:ctx]
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("verify: no tokens")
	}
	want := make([][][]float32, len(packageWeights))
	sources := make([]string, len(packageWeights))
	for i, pw := range packageWeights {
		if want[i], sources[i], err = referenceLogits(cfg, ck, files, pw, ids, opt.Progress); err != nil {
			return nil, err
		}
	}
	debug.FreeOSMemory() // the references' layer buffers, before the packages load
	low := opt.LowMemory || runner.NeedsLowMemory(files)
	m, err := runner.LoadWith(files, runner.LoadOptions{LowMemory: low})
	if err != nil {
		return nil, err
	}
	var step func(done, total int)
	if opt.Progress != nil {
		step = newProgress(opt.Progress, "verify: package run, position")
	}
	reps, err := compareWantProgress(m, ids, want, true, step)
	if err != nil {
		return nil, err
	}
	for i, rep := range reps {
		fmt.Fprintf(out, "verify: %d tokens, reference with %s\n", len(ids), sources[i])
		rep.Write(out)
	}
	return reps, nil
}

// referenceLogits runs the lazy reference on the checkpoint's weights, or
// on the packages' (packageWeights), and returns its logits for ids and a
// description of its weights.
func referenceLogits(cfg *hf.Config, ck *hf.Checkpoint, files *runner.Files, packageWeights bool, ids []int, progress io.Writer) ([][]float32, string, error) {
	var w reference.Weights = reference.CheckpointWeights(ck)
	source := "checkpoint weights"
	if packageWeights {
		pw, err := PackageWeights(files, w, cfg)
		if err != nil {
			return nil, "", err
		}
		if c, ok := pw.(io.Closer); ok {
			defer c.Close()
		}
		w, source = pw, "weights read back from the packages"
	}
	opt := reference.Options{Lazy: true}
	if progress != nil {
		opt.Progress = newProgress(progress, "verify: reference with "+source+", layer")
	}
	// Weights are read one layer at a time (bounded memory; the same
	// numbers as loading them all).
	ref, err := reference.NewWithOptions(cfg, w, opt)
	if err != nil {
		return nil, "", err
	}
	logits, err := ref.Forward(ids)
	return logits, source, err
}

// Directory is the pipeline's last step: the packages in dir against the
// reference running on the packages' own (dequantized) weights, which
// isolates graph errors from quantization error and must pass the fp16
// thresholds, and against the checkpoint itself, reported for information
// (it includes the quantization error). The packages run once for both.
func Directory(modelDir, dir string, out io.Writer) error {
	return DirectoryText(modelDir, dir, DefaultText, out)
}

// DirectoryText is Directory on the given text (a short one keeps the
// check cheap for big models).
func DirectoryText(modelDir, dir, text string, out io.Writer) error {
	return DirectoryWith(modelDir, dir, text, out, Options{})
}

// DirectoryWith is DirectoryText with options; an empty text means
// DefaultText.
func DirectoryWith(modelDir, dir, text string, out io.Writer, opt Options) error {
	if text == "" {
		text = DefaultText
	}
	files, err := runner.FindFiles(dir)
	if err != nil {
		return err
	}
	tok, err := LoadTokenizer(dir, modelDir)
	if err != nil {
		return err
	}
	reps, err := run(modelDir, files, tok.Encode(text, true), []bool{true, false}, out, opt)
	if err != nil {
		return err
	}
	return reps[0].Check(DefaultThresholds)
}

// progressEvery is how often progress lines are printed.
const progressEvery = 10 * time.Second

// newProgress returns a function that prints "label done/total" to w when
// progressEvery has passed since the start or the last line, and once at
// the end if it printed before: short runs print nothing.
func newProgress(w io.Writer, label string) func(done, total int) {
	start := time.Now()
	last, printed := start, false
	return func(done, total int) {
		now := time.Now()
		if now.Sub(last) < progressEvery && !(printed && done == total) {
			return
		}
		last, printed = now, true
		fmt.Fprintf(w, "%s %d/%d (%s)\n", label, done, total, now.Sub(start).Round(time.Second))
	}
}
