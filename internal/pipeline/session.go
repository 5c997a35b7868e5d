package pipeline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/quant"
)

// Session is an open checkpoint with its converter.
type Session struct {
	Config *hf.Config
	ckpt   *hf.Checkpoint
	Conv   Converter
	opts   Options
	// Calib is set when the options ask for calibration.
	Calib *Calibrator
}

// Open loads and checks the checkpoint and options: config.json, the
// safetensors files, the architecture, and the conversion flags.
func Open(opts Options) (*Session, error) {
	if opts.Model == "" {
		return nil, errors.New("pipeline: no model directory given (--model DIR)")
	}
	cfg, err := hf.LoadConfig(opts.Model)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fam, err := arch.Lookup(cfg)
	if err != nil {
		return nil, err
	}
	ckpt, err := hf.OpenCheckpoint(opts.Model)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	if err := checkFP16Flag(opts.FP16Scale); err != nil {
		ckpt.Close()
		return nil, err
	}
	// The converter checks the options and every tensor first, so bad
	// input is refused before any measurement runs.
	lo := decoderOptions(opts)
	conv, err := decoder.NewConverter(cfg, ckpt, lo)
	if err != nil {
		ckpt.Close()
		return nil, err
	}
	alpha, err := resolveFP16Scale(opts.FP16Scale, cfg, fam, ckpt, opts.Model, log)
	if err != nil {
		ckpt.Close()
		return nil, err
	}
	if alpha != 0 {
		lo.ResidualScale = alpha
		if conv, err = decoder.NewConverter(cfg, ckpt, lo); err != nil {
			ckpt.Close()
			return nil, err
		}
	}
	if ctx := conv.Options().ContextLength; ctx > cfg.MaxPositionEmbeddings {
		fmt.Fprintf(log, "warning: --context %d is beyond the checkpoint's max_position_embeddings %d (%s): it was not trained on positions that far, so expect worse text past them\n",
			ctx, cfg.MaxPositionEmbeddings, filepath.Join(opts.Model, hf.ConfigFile))
	}
	var cal *Calibrator
	if opts.Calibration != "" {
		if opts.LUT == (decoder.LUTBits{}) {
			ckpt.Close()
			return nil, fmt.Errorf("pipeline: --calibration %s given but no LUT bits are set; calibration only changes palettized weights (set --lut, --lut1, --lut2 or --lut3)", opts.Calibration)
		}
		if cal, err = NewCalibrator(opts.Model, cfg, ckpt, opts.Calibration, opts.CalibrationTokens, conv.Options().ContextLength); err != nil {
			ckpt.Close()
			return nil, err
		}
		lo.Palettize = cal.Palettize
		lo.Metadata = map[string]string{
			"com.anemll-go.calibration_tokens": strconv.Itoa(cal.Set.Tokens),
			"com.anemll-go.calibration_sha256": cal.Text.SHA256,
		}
		if conv, err = decoder.NewConverter(cfg, ckpt, lo); err != nil {
			ckpt.Close()
			return nil, err
		}
	}
	return &Session{Config: cfg, ckpt: ckpt, Conv: conv, opts: opts, Calib: cal}, nil
}

// decoderOptions maps pipeline options to the converter's.
func decoderOptions(opts Options) decoder.Options {
	lo := decoder.Options{
		ContextLength: opts.ContextLength, StateLength: opts.StateLength, BatchSize: opts.BatchSize,
		NumChunks: opts.NumChunks, Prefix: opts.Prefix, LUT: opts.LUT, LUTGroupSize: opts.LUTGroupSize,
		Palettize: Palettize, Eligible: quant.Eligible,
		OnOverflow: overflowWarner(opts.Log), AllowUnusedWeights: opts.AllowUnusedWeights, Warn: lineWarner(opts.Log),
		LUTGroups: opts.LUTGroups, Argmax: opts.Argmax, AllowMissingWeights: opts.AllowMissingWeights,
	}
	if opts.palettize != nil {
		lo.Palettize = opts.palettize
	}
	if opts.Monolithic {
		lo.NumChunks = 1
	}
	return lo
}

// Close releases the checkpoint.
func (s *Session) Close() error { return s.ckpt.Close() }

// WritePart converts one part (one chunk of a chunked part) and writes it
// into dir atomically, returning the package path.
func (s *Session) WritePart(p arch.Part, chunk int, dir string, progress func(done, total int)) (string, error) {
	name, err := s.Conv.FileName(p, chunk)
	if err != nil {
		return "", err
	}
	pkg, err := s.Conv.Part(p, chunk)
	if err != nil {
		return "", err
	}
	if p == arch.PartPrefill || p == arch.PartMonolithicPrefill {
		// The decode chunk written before holds the same palettized
		// weights: read them back instead of palettizing again.
		from := arch.PartFFN
		if p == arch.PartMonolithicPrefill {
			from = arch.PartMonolithic
		}
		if ffnName, err := s.Conv.FileName(from, chunk); err == nil {
			if ffn, err := coreml.Open(filepath.Join(dir, ffnName)); err == nil {
				defer ffn.Close()
				reusePalettes(pkg, ffn)
			}
		}
	}
	out := filepath.Join(dir, name)
	err = coreml.Write(pkg, out, coreml.WriteOptions{Overwrite: true, Progress: progress})
	// A package's weights are garbage now; return them to the OS before
	// the next one so peak memory stays near one package, not the sum.
	debug.FreeOSMemory()
	if err != nil {
		return "", err
	}
	return out, nil
}

// reusePalettes points each constexpr_lut_to_dense literal of dst at the
// bytes of the same-named op in src when their types match, so weights
// palettized for one package are not palettized again for the next. The
// palettizer is deterministic, so the bytes are those dst would compute.
func reusePalettes(dst, src *coreml.Package) int {
	have := map[string]*mil.Op{}
	for _, f := range src.Program.Functions {
		for _, op := range f.Body.Ops {
			if op.Type == "constexpr_lut_to_dense" {
				have[op.Name] = op
			}
		}
	}
	reused := 0
	for _, f := range dst.Program.Functions {
		for _, op := range f.Body.Ops {
			from := have[op.Name]
			if op.Type != "constexpr_lut_to_dense" || from == nil {
				continue
			}
			ok := len(op.Inputs) == len(from.Inputs)
			for i := 0; ok && i < len(op.Inputs); i++ {
				a, b := op.Inputs[i], from.Inputs[i]
				ok = a.Param == b.Param && len(a.Args) == 1 && len(b.Args) == 1 &&
					a.Args[0].Value != nil && b.Args[0].Value != nil && a.Args[0].Value.Type.Equal(b.Args[0].Value.Type)
			}
			if !ok {
				continue
			}
			for i := range op.Inputs {
				// A small table (fewer than 10 entries: 2 or 3 bits on
				// one or two groups) is stored inline, so read back it
				// has Data and no Source; a large one the reverse.
				v, srcV := op.Inputs[i].Args[0].Value, from.Inputs[i].Args[0].Value
				v.Data, v.Source = srcV.Data, srcV.Source
			}
			reused++
		}
	}
	return reused
}

// lineWarner returns a callback printing one line to log (stderr when nil).
func lineWarner(log io.Writer) func(string) {
	if log == nil {
		log = os.Stderr
	}
	return func(msg string) { fmt.Fprintln(log, msg) }
}

// overflowWarner returns a callback that reports weights whose values do
// not fit fp16 (they become ±Inf in the package). It may be called from
// several goroutines.
func overflowWarner(log io.Writer) func(weight string, n int) {
	if log == nil {
		log = os.Stderr
	}
	var mu sync.Mutex
	return func(weight string, n int) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(log, "warning: %s: %d values beyond ±65504 overflow fp16 to ±Inf\n", weight, n)
	}
}
