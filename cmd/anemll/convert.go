package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/llama"
	"github.com/anemll/anemll/internal/calib"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/verify"
)

func init() {
	register("convert", "convert a Hugging Face checkpoint: one part (--part) or ANEMLL's whole pipeline", runConvert)
}

// lutFlag parses a LUT width: "none", "0" or one of 1, 2, 3, 4, 6, 8.
type lutFlag struct {
	bits int
	set  bool
}

func (l *lutFlag) String() string {
	if l.bits == 0 {
		return "none"
	}
	return strconv.Itoa(l.bits)
}

func (l *lutFlag) Set(s string) error {
	l.set = true
	if s == "none" || s == "" {
		l.bits = 0
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || (n != 0 && n != 1 && n != 2 && n != 3 && n != 4 && n != 6 && n != 8) {
		return fmt.Errorf("LUT bits must be none, 1, 2, 3, 4, 6 or 8, not %q", s)
	}
	l.bits = n
	return nil
}

// intAlias registers an int flag under several names.
func intAlias(fs *flag.FlagSet, p *int, def int, usage string, names ...string) {
	*p = def
	for _, n := range names {
		fs.IntVar(p, n, def, usage)
	}
}

func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert", stderr)
	var (
		model     = fs.String("model", "", "Hugging Face checkpoint directory (config.json + *.safetensors)")
		output    = fs.String("output", ".", "output directory")
		prefix    = fs.String("prefix", "llama", "file name prefix")
		part      = fs.String("part", "", "convert one part: 1 (embeddings), 2 (FFN), 2_prefill, 3 (LM head); empty runs the whole pipeline")
		stateLen  = fs.Int("state-length", 0, "KV-cache length (default: config.json state_length, else the context length)")
		restart   = fs.Int("restart", 1, "pipeline: restart from step N (1-8)")
		only      = fs.Int("only", 0, "pipeline: run only step N (1-8)")
		skipCheck = fs.Bool("skip-check", false, "pipeline: skip step 8 (verification)")
		group     = fs.Int("lut-group-size", 8, "output channels per LUT")
		calText   = fs.String("calibration", "", "UTF-8 text file: palettize to minimise each layer's output error on its activations (fortunes separated by % lines, or plain text)")
		calTokens = fs.Int("calibration-tokens", 0, fmt.Sprintf("calibration tokens to use, in sequences of the context length (default %d)", calib.DefaultTokens))
		context   int
		batch     int
		chunks    int
		lut, lut1 lutFlag
		lut2      lutFlag
		lut3      lutFlag
	)
	intAlias(fs, &context, 512, "context length", "context-length", "context")
	intAlias(fs, &batch, 64, "prefill batch size", "batch-size", "batch")
	intAlias(fs, &chunks, 0, "number of FFN/prefill chunks (default 1 with --part, 2 for the pipeline)", "chunk")
	fs.Var(&lut, "lut", "with --part: LUT bits for that part (none, 1, 2, 3, 4, 6, 8)")
	fs.Var(&lut1, "lut1", "pipeline: LUT bits for embeddings (default none)")
	fs.Var(&lut2, "lut2", "pipeline: LUT bits for FFN and prefill (default 4)")
	fs.Var(&lut3, "lut3", "pipeline: LUT bits for the LM head (default 6)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: anemll convert --model DIR [--output DIR] [--part 1|2|2_prefill|3 [--lut N]] [flags]")
		fmt.Fprintln(stderr, "Without --part, runs ANEMLL's steps 1-8: embeddings, LM head, FFN, prefill, combine, compile, meta.yaml, verify.")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if *model == "" {
		return fmt.Errorf("%w: --model DIR is required", errUsage)
	}
	if *part != "" {
		if lut1.set || lut2.set || lut3.set {
			return fmt.Errorf("%w: --lut1/--lut2/--lut3 belong to the pipeline; with --part use --lut", errUsage)
		}
		if chunks == 0 {
			chunks = 1
		}
		return convertPart(*part, lut.bits, pipeline.Options{
			Model: *model, Output: *output, Prefix: *prefix, ContextLength: context, BatchSize: batch,
			StateLength: *stateLen, NumChunks: chunks, LUTGroupSize: *group,
			Calibration: *calText, CalibrationTokens: *calTokens,
		}, stderr)
	}
	if lut.set {
		return fmt.Errorf("%w: --lut goes with --part; the pipeline takes --lut1, --lut2, --lut3", errUsage)
	}
	if chunks == 0 {
		chunks = 2
	}
	if !lut2.set {
		lut2.bits = 4
	}
	if !lut3.set {
		lut3.bits = 6
	}
	opts := pipeline.Options{
		Model: *model, Output: *output, Prefix: *prefix, ContextLength: context, BatchSize: batch,
		StateLength: *stateLen, NumChunks: chunks, LUTGroupSize: *group,
		LUT:     llama.LUTBits{Embeddings: lut1.bits, FFN: lut2.bits, LMHead: lut3.bits},
		Restart: *restart, Only: *only, SkipCheck: *skipCheck, Log: stderr,
		Calibration: *calText, CalibrationTokens: *calTokens,
		Verify: func(dir string) error {
			return verify.Directory(*model, dir, stdout)
		},
	}
	_, err = pipeline.Run(opts)
	return err
}

// convertPart converts one ANEMLL part (all chunks of a chunked part).
func convertPart(partName string, lutBits int, opts pipeline.Options, log io.Writer) error {
	p, err := arch.ParsePart(partName)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	switch p {
	case arch.PartEmbeddings:
		opts.LUT.Embeddings = lutBits
	case arch.PartFFN, arch.PartPrefill:
		opts.LUT.FFN = lutBits
	case arch.PartLMHead:
		opts.LUT.LMHead = lutBits
	default:
		return fmt.Errorf("%w: --part %s is made by 'anemll combine'", errUsage, partName)
	}
	if st, err := os.Stat(opts.Output); err == nil && !st.IsDir() {
		return fmt.Errorf("output %s is a file, not a directory", opts.Output)
	}
	s, err := pipeline.Open(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := os.MkdirAll(opts.Output, 0o755); err != nil {
		return err
	}
	n := 1
	if p.Chunked() {
		n = len(s.Conv.Layout())
	}
	for i := 0; i < n; i++ {
		name, _ := s.Conv.FileName(p, i)
		fmt.Fprintf(log, "writing %s\n", name)
		path, err := s.WritePart(p, i, opts.Output, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(log, "  %s\n", path)
		if s.Calib != nil {
			s.Calib.WriteReport(log, name)
		}
	}
	return nil
}
