package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/verify"
)

func init() {
	register("verify", "compare converted packages with a reference forward pass of the checkpoint", runVerify)
}

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", stderr)
	model := fs.String("model", "", "the original Hugging Face checkpoint directory")
	dir := fs.String("dir", "", "directory of converted packages (uses meta.yaml when present)")
	meta := fs.String("meta", "", "meta.yaml naming the packages (instead of --dir)")
	prompt := fs.String("prompt", "", "text to tokenize and run (default: a built-in paragraph)")
	tokens := fs.String("tokens", "", "file of token ids (whitespace or comma separated) instead of --prompt")
	weights := fs.String("weights", "checkpoint", "reference weights: checkpoint, or package (read back from the packages, LUTs dequantized)")
	maxKL := fs.Float64("max-mean-kl", verify.DefaultThresholds.MaxMeanKL, "fail if either path's mean KL exceeds this")
	lowMem := fs.Bool("low-memory", false, "load one chunk's weights at a time on the interpreter (automatic when memory is short)")
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
	if *weights != "package" && *weights != "checkpoint" {
		return fmt.Errorf("%w: --weights is checkpoint or package", errUsage)
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
			text = verify.DefaultText
		}
		tok, err := verify.LoadTokenizer(files.Dir, *model)
		if err != nil {
			return err
		}
		ids = tok.Encode(text, true)
	}
	rep, err := verify.RunWith(*model, files, ids, *weights == "package", stdout, verify.Options{LowMemory: *lowMem, Progress: stderr})
	if err != nil {
		return err
	}
	return rep.Check(verify.Thresholds{MaxMeanKL: *maxKL, MinTop1: *minTop1 / 100})
}

func findFiles(dir, meta string) (*runner.Files, error) {
	if meta != "" {
		return runner.FilesFromMeta(meta)
	}
	return runner.FindFiles(dir)
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
