package verify

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

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

// Run loads the packages in files and the reference of the checkpoint in
// modelDir (with the packages' own weights if packageWeights), compares
// them on ids (cut to the context length) and prints the table to out.
func Run(modelDir string, files *runner.Files, ids []int, packageWeights bool, out io.Writer) (*Report, error) {
	reps, err := run(modelDir, files, ids, []bool{packageWeights}, out)
	if err != nil {
		return nil, err
	}
	return reps[0], nil
}

// run loads the checkpoint and the packages once and compares the packages
// with one reference per entry of packageWeights (true: the packages' own
// weights, false: the checkpoint's), printing a table for each.
func run(modelDir string, files *runner.Files, ids []int, packageWeights []bool, out io.Writer) ([]*Report, error) {
	// The live heap here is the packages' weights plus one float32 layer
	// at a time: collect garbage at 20 % growth instead of Go's default
	// 100 %, so a big model's peak stays near what is really live.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	cfg, err := hf.LoadConfig(modelDir)
	if err != nil {
		return nil, err
	}
	ck, err := hf.OpenCheckpoint(modelDir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	m, err := runner.Load(files)
	if err != nil {
		return nil, err
	}
	if len(ids) > m.ContextLength {
		ids = ids[:m.ContextLength]
	}
	refs := make([]*reference.Model, len(packageWeights))
	sources := make([]string, len(packageWeights))
	for i, pw := range packageWeights {
		var w reference.Weights = reference.CheckpointWeights(ck)
		sources[i] = "checkpoint weights"
		if pw {
			if w, err = PackageWeights(files, w, cfg); err != nil {
				return nil, err
			}
			sources[i] = "weights read back from the packages"
		}
		if c, ok := w.(io.Closer); ok {
			defer c.Close()
		}
		// Weights are read one layer at a time (bounded memory; the same
		// numbers as loading them all).
		if refs[i], err = reference.NewWithOptions(cfg, w, reference.Options{Lazy: true}); err != nil {
			return nil, err
		}
	}
	reps, err := CompareMany(m, refs, ids)
	if err != nil {
		return nil, err
	}
	for i, rep := range reps {
		fmt.Fprintf(out, "verify: %d tokens, reference with %s\n", len(ids), sources[i])
		rep.Write(out)
	}
	return reps, nil
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
	files, err := runner.FindFiles(dir)
	if err != nil {
		return err
	}
	tok, err := LoadTokenizer(dir, modelDir)
	if err != nil {
		return err
	}
	reps, err := run(modelDir, files, tok.Encode(text, true), []bool{true, false}, out)
	if err != nil {
		return err
	}
	return reps[0].Check(DefaultThresholds)
}
