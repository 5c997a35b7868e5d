package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/calib"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/verify"
)

func init() {
	register("convert", "convert a Hugging Face checkpoint: one part (--part) or ANEMLL's whole pipeline", runConvert)
}

// lutFlag parses ANEMLL's LUT spelling: "none" (or "no", "false", "0"), or
// "bits" with bits in 1, 2, 3, 4, 6, 8, optionally followed by ",group"
// (output channels per LUT) where "0", "tensor" or "t" mean one table per
// tensor.
type lutFlag struct {
	bits  int
	group int // 0: not given; decoder.PerTensor
	set   bool
}

func (l *lutFlag) String() string {
	if l.bits == 0 {
		return "none"
	}
	s := strconv.Itoa(l.bits)
	switch {
	case l.group == decoder.PerTensor:
		s += ",tensor"
	case l.group > 0:
		s += "," + strconv.Itoa(l.group)
	}
	return s
}

func (l *lutFlag) Set(s string) error {
	l.set = true
	l.bits, l.group = 0, 0
	v := strings.ToLower(strings.TrimSpace(s))
	bitsStr, groupStr, hasGroup := strings.Cut(v, ",")
	switch bitsStr {
	case "none", "no", "false", "", "0":
		if hasGroup {
			return fmt.Errorf("LUT %q: a group size needs LUT bits", s)
		}
		return nil
	}
	n, err := strconv.Atoi(bitsStr)
	if err != nil || (n != 1 && n != 2 && n != 3 && n != 4 && n != 6 && n != 8) {
		return fmt.Errorf("LUT bits must be none, 1, 2, 3, 4, 6 or 8, not %q", s)
	}
	l.bits = n
	if hasGroup {
		switch g := strings.TrimSpace(groupStr); g {
		case "0", "tensor", "t":
			l.group = decoder.PerTensor
		default:
			k, err := strconv.Atoi(g)
			if err != nil || k < 1 {
				return fmt.Errorf("LUT %q: the group size after the comma must be a positive channel count, or 0/tensor for one table per tensor", s)
			}
			l.group = k
		}
	}
	return nil
}

// chunkFlag is --chunk N or --chunk auto.
type chunkFlag struct {
	n    int
	auto bool
}

func (c *chunkFlag) String() string {
	if c.auto {
		return "auto"
	}
	return strconv.Itoa(c.n)
}

func (c *chunkFlag) Set(s string) error {
	if strings.EqualFold(s, "auto") {
		c.auto, c.n = true, 0
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("--chunk takes a positive number or auto, not %q", s)
	}
	c.n, c.auto = n, false
	return nil
}

// intAlias registers an int flag under several names.
func intAlias(fs *flag.FlagSet, p *int, def int, usage string, names ...string) {
	*p = def
	for _, n := range names {
		fs.IntVar(p, n, def, usage)
	}
}

// pythonOnly are ANEMLL flags that only steer its Python/coremltools
// pipeline; convert accepts them so scripted command lines keep working and
// says in one line why they change nothing here. The bool says whether the
// flag takes a value.
var pythonOnly = []struct {
	name  string
	value bool
	note  string
}{
	{"force-mlprogram-compile", false, "our packages are always ML programs"},
	{"dynamic-prefill-slice", false, "our prefill always writes its K/V at current_pos (a dynamic slice)"},
	{"static-prefill-slice", false, "our prefill always writes its K/V at current_pos (a dynamic slice)"},
	{"single-cache", false, "our sliding-window models always use one unified KV cache"},
	{"split-rotate", false, "our sliding-window layers need no rotate functions"},
	{"clamp", true, "runtime residual clamping is not applied by this converter"},
}

// noteFlag records that a Python-only flag was given.
type noteFlag struct {
	name, note string
	value      bool
	notes      *[]string
}

func (n *noteFlag) String() string { return "" }
func (n *noteFlag) Set(s string) error {
	*n.notes = append(*n.notes, fmt.Sprintf("note: --%s accepted for ANEMLL compatibility and ignored: %s", n.name, n.note))
	return nil
}
func (n *noteFlag) IsBoolFlag() bool { return !n.value }

func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert", stderr)
	var (
		model      = fs.String("model", "", "Hugging Face checkpoint directory (config.json + *.safetensors)")
		output     = fs.String("output", ".", "output directory")
		prefix     = fs.String("prefix", "", "file name prefix (default: the family's, as ANEMLL: llama, qwen, qwen25, gemma3)")
		part       = fs.String("part", "", "convert one part: 1 (embeddings), 2 (FFN), 2_prefill, 3 (LM head), monolithic, monolithic_prefill; empty runs the whole pipeline")
		stateLen   = fs.Int("state-length", 0, "KV-cache length (default: config.json state_length, else the context length)")
		restart    = fs.Int("restart", 1, "pipeline: restart from step N (1-8; 1-6 with --monolithic)")
		only       = fs.Int("only", 0, "pipeline: run only step N (1-8; 1-6 with --monolithic)")
		skipCheck  = fs.Bool("skip-check", false, "pipeline: skip the verification step")
		lowMem     = fs.Bool("low-memory", false, "pipeline step 8: load one chunk's weights at a time on the interpreter (automatic when memory is short)")
		group      = fs.Int("lut-group-size", 8, "output channels per LUT (default for every part; --lutN bits,group overrides)")
		argmax     = fs.Bool("argmax", false, "LM head returns argmax_idx/argmax_val per split instead of logits (greedy decoding only)")
		monolithic = fs.Bool("monolithic", false, "one package with embeddings, every layer and the LM head (ANEMLL's convert_monolith.sh)")
		noLUT      = fs.Bool("no-lut", false, "no LUT quantization at all (fp16 only)")
		maxChunkMB = fs.Int("max-chunk-mb", pipeline.DefaultMaxChunkMB, "with --chunk auto: largest FFN/prefill package in MB (MiB)")
		chunkNo    = fs.Int("chunk-no", 0, "convert only this chunk (1-based) of the chunked parts")
		allowMiss  = fs.Bool("allow-missing-weights", false, "convert although the checkpoint lacks tensors that have a neutral default (norm gains, biases, a head tied to the embeddings), listing them")
		allowUnuse = fs.Bool("allow-unused-weights", false, "convert although the checkpoint holds tensors the conversion does not use, listing them")
		fp16Scale  = fs.String("fp16-scale", "auto", "residual-stream scale against fp16 overflow: auto (measure families known to overflow, Gemma 3), measure (any family), none, or a number in (0, 1]")
		calText    = fs.String("calibration", "", "UTF-8 text file: palettize to minimise each layer's output error on its activations (fortunes separated by % lines, or plain text)")
		calTokens  = fs.Int("calibration-tokens", 0, fmt.Sprintf("calibration tokens to use, in sequences of the context length (default %d)", calib.DefaultTokens))
		skipDedup  = fs.Bool("skip-anemll-dedup", false, "accepted for ANEMLL compatibility (our combine already stores each shared weight once)")
		context    int
		batch      int
		chunks     chunkFlag
		lut, lut1  lutFlag
		lut2       lutFlag
		lut3       lutFlag
		lutEmb     lutFlag
		lutHead    lutFlag
		notes      []string
	)
	intAlias(fs, &context, 512, "context length", "context-length", "context")
	intAlias(fs, &batch, 64, "prefill batch size", "batch-size", "batch")
	fs.Var(&chunks, "chunk", "number of FFN/prefill chunks, or auto (default 1 with --part, 2 for the pipeline)")
	fs.Var(&lut, "lut", "with --part: LUT for that part; with --monolithic: LUT for every part (default 4); bits[,group]")
	fs.Var(&lut1, "lut1", "pipeline: LUT for embeddings, bits[,group] (default none)")
	fs.Var(&lut2, "lut2", "pipeline: LUT for FFN and prefill, bits[,group] (default 4)")
	fs.Var(&lut3, "lut3", "pipeline: LUT for the LM head, bits[,group] (default 6)")
	fs.Var(&lutEmb, "lut-embeddings", "with --monolithic: LUT for the embeddings (default: --lut)")
	fs.Var(&lutHead, "lut-lmhead", "with --monolithic: LUT for the LM head (default: --lut)")
	for _, p := range pythonOnly {
		fs.Var(&noteFlag{name: p.name, note: p.note, value: p.value, notes: &notes}, p.name, "accepted for ANEMLL compatibility; no effect ("+p.note+")")
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: anemll convert --model DIR [--output DIR] [--part 1|2|2_prefill|3|monolithic|monolithic_prefill [--lut N]] [flags]")
		fmt.Fprintln(stderr, "Without --part, runs ANEMLL's steps 1-8: embeddings, LM head, FFN, prefill, combine, compile, meta.yaml, verify;")
		fmt.Fprintln(stderr, "with --monolithic, convert_monolith.sh's steps 1-6: infer, prefill, combine, compile, meta.yaml, verify.")
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
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	if *skipDedup {
		fmt.Fprintln(stderr, "note: --skip-anemll-dedup accepted: our combine already stores each weight shared by infer and prefill once, so there is no separate dedup pass to skip")
	}
	if *chunkNo < 0 {
		return fmt.Errorf("%w: --chunk-no takes a chunk number from 1", errUsage)
	}
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{
		{"--context", context, 1}, {"--batch", batch, 1}, {"--state-length", *stateLen, 0},
		{"--calibration-tokens", *calTokens, 0}, {"--max-chunk-mb", *maxChunkMB, 1},
	} {
		if f.v < f.min {
			return fmt.Errorf("%w: %s %d: give a positive number (leave the flag out for its default)", errUsage, f.name, f.v)
		}
	}
	if *noLUT && (lut.bits > 0 || lut1.bits > 0 || lut2.bits > 0 || lut3.bits > 0 || lutEmb.bits > 0 || lutHead.bits > 0) {
		return fmt.Errorf("%w: --no-lut contradicts a LUT flag; drop one of them", errUsage)
	}
	if (lutEmb.set || lutHead.set) && !*monolithic {
		return fmt.Errorf("%w: --lut-embeddings and --lut-lmhead go with --monolithic; the pipeline takes --lut1 and --lut3", errUsage)
	}
	base := pipeline.Options{
		Model: *model, Output: *output, Prefix: *prefix, ContextLength: context, BatchSize: batch,
		StateLength: *stateLen, NumChunks: chunks.n, LUTGroupSize: *group, Argmax: *argmax,
		AllowMissingWeights: *allowMiss, AllowUnusedWeights: *allowUnuse, ChunkNo: *chunkNo, Log: stderr,
		FP16Scale: *fp16Scale, Calibration: *calText, CalibrationTokens: *calTokens,
	}
	if *part != "" {
		if lut1.set || lut2.set || lut3.set {
			return fmt.Errorf("%w: --lut1/--lut2/--lut3 belong to the pipeline; with --part use --lut", errUsage)
		}
		if chunks.auto {
			return fmt.Errorf("%w: --chunk auto belongs to the pipeline; with --part give a number", errUsage)
		}
		if base.NumChunks == 0 {
			base.NumChunks = 1
		}
		return convertPart(*part, lut, base, stderr)
	}
	if *monolithic {
		if lut1.set || lut2.set || lut3.set {
			return fmt.Errorf("%w: --monolithic takes --lut (every part), --lut-embeddings and --lut-lmhead, not --lut1/--lut2/--lut3", errUsage)
		}
		if chunks.auto || chunks.n > 1 || *chunkNo > 0 {
			return fmt.Errorf("%w: a monolithic model is one package: --chunk and --chunk-no do not apply", errUsage)
		}
		if !lut.set && !*noLUT {
			lut.bits = 4
		}
		emb, head := lut, lut
		if lutEmb.set {
			emb = lutEmb
		}
		if lutHead.set {
			head = lutHead
		}
		base.Monolithic = true
		base.LUT = decoder.LUTBits{Embeddings: emb.bits, FFN: lut.bits, LMHead: head.bits}
		base.LUTGroups = decoder.LUTGroups{Embeddings: emb.group, FFN: lut.group, LMHead: head.group}
	} else {
		if lut.set {
			return fmt.Errorf("%w: --lut goes with --part or --monolithic; the pipeline takes --lut1, --lut2, --lut3", errUsage)
		}
		if !lut2.set && !*noLUT {
			lut2.bits = 4
		}
		if !lut3.set && !*noLUT {
			lut3.bits = 6
		}
		base.LUT = decoder.LUTBits{Embeddings: lut1.bits, FFN: lut2.bits, LMHead: lut3.bits}
		base.LUTGroups = decoder.LUTGroups{Embeddings: lut1.group, FFN: lut2.group, LMHead: lut3.group}
		if !chunks.auto && base.NumChunks == 0 {
			base.NumChunks = 2
		}
	}
	base.Restart, base.Only, base.SkipCheck = *restart, *only, *skipCheck
	base.Verify = func(dir string) error {
		return verify.DirectoryWith(*model, dir, "", stdout, verify.Options{LowMemory: *lowMem, Progress: stderr})
	}
	if chunks.auto {
		if *maxChunkMB < 1 {
			return fmt.Errorf("%w: --max-chunk-mb must be positive", errUsage)
		}
		plan, err := pipeline.PlanChunks(base, int64(*maxChunkMB)*pipeline.MB)
		if err != nil {
			return err
		}
		plan.Write(stderr)
		base.NumChunks = plan.Chunks
	}
	_, err = pipeline.Run(base)
	return err
}

// convertPart converts one ANEMLL part (all chunks of a chunked part, or
// chunk --chunk-no).
func convertPart(partName string, lut lutFlag, opts pipeline.Options, log io.Writer) error {
	p, err := arch.ParsePart(partName)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	switch p {
	case arch.PartEmbeddings:
		opts.LUT.Embeddings, opts.LUTGroups.Embeddings = lut.bits, lut.group
	case arch.PartFFN, arch.PartPrefill:
		opts.LUT.FFN, opts.LUTGroups.FFN = lut.bits, lut.group
	case arch.PartLMHead:
		opts.LUT.LMHead, opts.LUTGroups.LMHead = lut.bits, lut.group
	case arch.PartMonolithic, arch.PartMonolithicPrefill:
		// ANEMLL's converter: --lut applies to every part.
		opts.LUT = decoder.LUTBits{Embeddings: lut.bits, FFN: lut.bits, LMHead: lut.bits}
		opts.LUTGroups = decoder.LUTGroups{Embeddings: lut.group, FFN: lut.group, LMHead: lut.group}
		if opts.NumChunks > 1 {
			return fmt.Errorf("%w: a monolithic model is one package; drop --chunk", errUsage)
		}
		opts.Monolithic = true
	default:
		return fmt.Errorf("%w: --part %s is made by 'anemll combine'", errUsage, partName)
	}
	if opts.Argmax && p != arch.PartLMHead && p != arch.PartMonolithic {
		return fmt.Errorf("%w: --argmax changes the LM head: use it with --part 3 or monolithic", errUsage)
	}
	if st, err := os.Stat(opts.Output); err == nil && !st.IsDir() {
		return fmt.Errorf("output %s is a file, not a directory", opts.Output)
	}
	opts.Log = log
	s, err := pipeline.Open(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := os.MkdirAll(opts.Output, 0o755); err != nil {
		return err
	}
	var list []int
	if p.Chunked() {
		n := len(s.Conv.Layout())
		if opts.ChunkNo > n {
			return fmt.Errorf("%w: --chunk-no %d is beyond the %d chunks", errUsage, opts.ChunkNo, n)
		}
		for i := 0; i < n; i++ {
			if opts.ChunkNo == 0 || opts.ChunkNo == i+1 {
				list = append(list, i)
			}
		}
	} else {
		list = []int{0}
	}
	for _, i := range list {
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
