package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tokenizer"
	"github.com/anemll/anemll/internal/verify"
)

func init() {
	register("verify", "compare converted packages with a reference forward pass of the checkpoint", runVerify)
}

// defaultVerifyText is the prompt verify uses when none is given.
const defaultVerifyText = `Q: What is the difference between a duck and a computer?
A: One of them quacks when you least expect it.
The programmer looked at the screen for a long time, then said: "It works on my machine." -- Anonymous
Never put off until tomorrow what you can do the day after tomorrow. Work expands to fill the time available for its completion, and the cat sleeps on the keyboard anyway.`

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", stderr)
	model := fs.String("model", "", "the original Hugging Face checkpoint directory")
	dir := fs.String("dir", "", "directory of converted packages (uses meta.yaml when present)")
	meta := fs.String("meta", "", "meta.yaml naming the packages (instead of --dir)")
	prompt := fs.String("prompt", "", "text to tokenize and run (default: a built-in paragraph)")
	tokens := fs.String("tokens", "", "file of token ids (whitespace or comma separated) instead of --prompt")
	weights := fs.String("weights", "checkpoint", "reference weights: checkpoint, or package (read back from the packages, LUTs dequantized)")
	maxKL := fs.Float64("max-mean-kl", verify.DefaultThresholds.MaxMeanKL, "fail if either path's mean KL exceeds this")
	minTop1 := fs.Float64("min-top1", 100*verify.DefaultThresholds.MinTop1, "fail if either path's top-1 agreement (percent) is below this")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: anemll verify --model CKPT (--dir OUT | --meta OUT/meta.yaml) [--prompt TEXT | --tokens FILE] [--weights checkpoint|package]")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *model == "" || (*dir == "") == (*meta == "") {
		return fmt.Errorf("%w: give --model and exactly one of --dir or --meta", errUsage)
	}
	files, err := findFiles(*dir, *meta)
	if err != nil {
		return err
	}
	var ids []int
	if *tokens != "" {
		if ids, err = readTokens(*tokens); err != nil {
			return err
		}
	} else {
		text := *prompt
		if text == "" {
			text = defaultVerifyText
		}
		tok, err := loadTokenizer(files.Dir, *model)
		if err != nil {
			return err
		}
		ids = tok.Encode(text, true)
	}
	rep, err := runVerification(*model, files, ids, *weights == "package", stdout)
	if err != nil {
		return err
	}
	if *weights != "package" && *weights != "checkpoint" {
		return fmt.Errorf("%w: --weights is checkpoint or package", errUsage)
	}
	return rep.Check(verify.Thresholds{MaxMeanKL: *maxKL, MinTop1: *minTop1 / 100})
}

func findFiles(dir, meta string) (*runner.Files, error) {
	if meta != "" {
		return runner.FilesFromMeta(meta)
	}
	return runner.FindFiles(dir)
}

// loadTokenizer loads the tokenizer from the package directory, or else
// from the checkpoint.
func loadTokenizer(dirs ...string) (*tokenizer.Tokenizer, error) {
	var firstErr error
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "tokenizer.json")); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("no tokenizer.json in %s", d)
			}
			continue
		}
		return tokenizer.Load(d)
	}
	return nil, firstErr
}

func readTokens(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ids []int
	for _, f := range strings.FieldsFunc(string(b), func(r rune) bool {
		return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '[' || r == ']' || r == '\r'
	}) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a token id", path, f)
		}
		ids = append(ids, n)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s holds no token ids", path)
	}
	return ids, nil
}

// runVerification loads the packages and the reference and prints the
// comparison table.
func runVerification(modelDir string, files *runner.Files, ids []int, packageWeights bool, out io.Writer) (*verify.Report, error) {
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
	var w reference.Weights = reference.CheckpointWeights(ck)
	source := "checkpoint weights"
	if packageWeights {
		if w, err = verify.PackageWeights(files, w); err != nil {
			return nil, err
		}
		source = "weights read back from the packages"
	}
	ref, err := reference.New(cfg, w)
	if err != nil {
		return nil, err
	}
	rep, err := verify.Compare(m, ref, ids)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "verify: %d tokens, reference with %s\n", len(ids), source)
	rep.Write(out)
	return rep, nil
}

// verifyOutput is the pipeline's step 8: the packages against the
// reference running on the packages' own (dequantized) weights, which
// separates graph errors from quantization error, then against the
// checkpoint itself for information.
func verifyOutput(modelDir, dir string, out io.Writer) error {
	files, err := runner.FindFiles(dir)
	if err != nil {
		return err
	}
	tok, err := loadTokenizer(dir, modelDir)
	if err != nil {
		return err
	}
	ids := tok.Encode(defaultVerifyText, true)
	rep, err := runVerification(modelDir, files, ids, true, out)
	if err != nil {
		return err
	}
	if err := rep.Check(verify.DefaultThresholds); err != nil {
		return err
	}
	_, err = runVerification(modelDir, files, ids, false, out)
	return err
}
