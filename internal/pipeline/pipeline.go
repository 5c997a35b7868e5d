// Package pipeline runs ANEMLL's whole conversion as one resumable
// command: convert embeddings, LM head, FFN and prefill chunks, combine
// FFN+prefill into multifunction packages, compile where Apple's compiler
// exists, copy the tokenizer and write meta.yaml, then verify.
package pipeline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tempdir"
)

// Options are ANEMLL's convert_model.sh flags.
type Options struct {
	// Model is the Hugging Face checkpoint directory; Output the
	// directory that receives the packages.
	Model, Output string
	Prefix        string
	ContextLength int
	BatchSize     int
	// StateLength is the KV-cache length (default: config.json's
	// state_length, else ContextLength).
	StateLength int
	NumChunks   int
	// LUT widths per part (0 = fp16): --lut1 embeddings, --lut2 FFN and
	// prefill, --lut3 LM head.
	LUT decoder.LUTBits
	// LUTGroupSize is the palettization group size (default 8).
	LUTGroupSize int
	// Restart skips the steps before it (1–8); Only runs just that step.
	Restart, Only int
	// SkipCheck skips step 8 (verification).
	SkipCheck bool
	// FP16Scale is --fp16-scale: "auto" (default), "measure", "none" or
	// a number in (0, 1] (see resolveFP16Scale).
	FP16Scale string
	// AllowUnusedWeights converts a checkpoint that holds tensors the
	// conversion does not use, with a warning, instead of refusing it.
	AllowUnusedWeights bool
	// AllowMissingWeights converts a checkpoint lacking tensors that have
	// a neutral default (see decoder.Options.AllowMissingWeights).
	AllowMissingWeights bool
	// LUTGroups overrides LUTGroupSize per part (--lutN bits,group; 0
	// keeps the default, decoder.PerTensor one table per tensor). A part
	// whose entry is set gets a *_per_channel key in meta.yaml.
	LUTGroups decoder.LUTGroups
	// Argmax puts the argmax inside the LM head (--argmax).
	Argmax bool
	// Monolithic runs convert_monolith.sh's steps instead: one package
	// with embeddings, every layer and the LM head (see MonolithicSteps).
	Monolithic bool
	// ChunkNo, if positive, converts only that chunk (1-based) of the
	// chunked parts in steps 3–5 (--chunk-no).
	ChunkNo int
	// Calibration, if set, is a UTF-8 text file: palettes then minimise
	// each layer's output error on its activations (see Calibrator).
	// CalibrationTokens caps the tokens used (0: calib.DefaultTokens).
	Calibration       string
	CalibrationTokens int
	// Log receives step lines, progress and the final table (nil: quiet).
	Log io.Writer
	// Verify runs step 8 on the finished output directory.
	Verify func(dir string) error
	// Compiler compiles a package into outDir; nil looks for xcrun.
	Compiler func(pkg, outDir string) error
	// StepHook, if set, is called when a step starts (done false) and
	// ends (done true), and as step 0 around opening the checkpoint (its
	// checks and, with Calibration, the activation statistics);
	// benchmarks measure per-step memory with it.
	StepHook func(step int, done bool)

	// fault, if set, is called at points inside steps; an error stops the
	// run there (tests simulate crashes with it).
	fault func(step int, where string) error
	// palettize, if set, replaces Palettize (tests count calls with it).
	palettize decoder.Palettizer
	// freeSpace, if set, replaces the free-space query of the output
	// directory's file system (tests fake a full disk with it).
	freeSpace func(dir string) (int64, error)
	// memAvailable, if set, replaces runner.MemAvailable (tests fake a
	// small machine with it).
	memAvailable func() int64
}

// Steps names ANEMLL's numbered steps.
var Steps = []string{
	1: "Converting Embeddings",
	2: "Converting LM Head",
	3: "Converting FFN",
	4: "Converting Prefill",
	5: "Combining Models",
	6: "Compiling Models",
	7: "Copying tokenizer files and creating meta.yaml",
	8: "Verifying against the checkpoint",
}

// MonolithicSteps names the steps of convert_monolith.sh, which a
// monolithic run follows.
var MonolithicSteps = []string{
	1: "Converting Monolithic Inference Model",
	2: "Converting Monolithic Prefill Model",
	3: "Combining Monolithic Models",
	4: "Compiling Models",
	5: "Copying tokenizer files and creating meta.yaml",
	6: "Verifying against the checkpoint",
}

// Converter builds the packages of one model family.
type Converter interface {
	Part(p arch.Part, chunk int) (*coreml.Package, error)
	FileName(p arch.Part, chunk int) (string, error)
	Layout() []arch.Range
	Options() decoder.Options
	Spec() *arch.Spec
	SlidingWindow() int
	LMHeadChunkSizes() []int
}

// Palettize adapts internal/quant to the converter's LUT hook.
func Palettize(req quant.Request) ([]uint8, []uint16, error) {
	p, err := quant.Palettize(req.Weights, req.Shape, quant.Options{Bits: req.Bits, GroupSize: req.GroupSize, Indices: req.Indices})
	if err != nil {
		return nil, nil, err
	}
	return p.Indices, p.LUT, nil
}

// prepareOutput makes sure dir is a usable directory and removes
// temporary files an interrupted run left behind.
func prepareOutput(dir string) error {
	if dir == "" {
		return errors.New("pipeline: no output directory given (--output DIR)")
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return fmt.Errorf("pipeline: output %s is a file, not a directory; choose another --output", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pipeline: create output directory: %w", err)
	}
	if err := tempdir.Clean(dir); err != nil {
		return fmt.Errorf("pipeline: clear what an interrupted run left in %s: %w", dir, err)
	}
	return nil
}

// runs reports whether step runs under --restart and --only.
func (o Options) runs(step int) bool {
	return step >= o.Restart && (o.Only == 0 || o.Only == step)
}

// Result lists what a run produced.
type Result struct {
	Files []string
	// Times holds each step's wall time (index = step number; 0 is
	// opening the checkpoint, calibration statistics included).
	Times [9]time.Duration
}

// Run executes the pipeline.
func Run(opts Options) (*Result, error) {
	if opts.Restart == 0 {
		opts.Restart = 1
	}
	names := Steps
	if opts.Monolithic {
		names = MonolithicSteps
		if opts.NumChunks > 1 {
			return nil, fmt.Errorf("pipeline: a monolithic model holds every layer in one package; drop --chunk %d", opts.NumChunks)
		}
		if opts.ChunkNo > 0 {
			return nil, fmt.Errorf("pipeline: --chunk-no does not apply to a monolithic model")
		}
		opts.NumChunks = 1
	}
	last := len(names) - 1
	if opts.Restart < 1 || opts.Restart > last || opts.Only < 0 || opts.Only > last {
		return nil, fmt.Errorf("pipeline: --restart and --only take a step number from 1 to %d", last)
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	if opts.StepHook != nil {
		opts.StepHook(0, false)
	}
	opened := time.Now()
	s, err := Open(opts)
	if opts.StepHook != nil {
		opts.StepHook(0, true)
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	openTime := time.Since(opened)
	if err := checkTokenizer(opts, last-1, last); err != nil {
		return nil, err
	}
	if err := prepareOutput(opts.Output); err != nil {
		return nil, err
	}
	chunks := len(s.Conv.Layout())
	if opts.ChunkNo > chunks {
		return nil, fmt.Errorf("pipeline: --chunk-no %d is beyond the %d chunks", opts.ChunkNo, chunks)
	}
	// chunkList is the chunks steps 3–5 convert.
	chunkList := make([]int, 0, chunks)
	for i := 0; i < chunks; i++ {
		if opts.ChunkNo == 0 || opts.ChunkNo == i+1 {
			chunkList = append(chunkList, i)
		}
	}
	planned, err := s.plannedOutputs(opts, chunkList)
	if err != nil {
		return nil, err
	}
	free := opts.freeSpace
	if free == nil {
		free = diskFree
	}
	if err := checkDiskSpace(opts.Output, planned, free); err != nil {
		return nil, err
	}
	mem := opts.memAvailable
	if mem == nil {
		mem = runner.MemAvailable
	}
	if err := checkVerifyMemory(opts, last, planned, chunks, mem()); err != nil {
		return nil, err
	}
	res := &Result{}
	res.Times[0] = openTime
	fault := func(step int, where string) error {
		if opts.fault != nil {
			return opts.fault(step, where)
		}
		return nil
	}
	part := func(step int, p arch.Part, chunk int) error {
		name, _ := s.Conv.FileName(p, chunk)
		bar := newProgress(log, fmt.Sprintf("  %s", name))
		_, err := s.WritePart(p, chunk, opts.Output, func(done, total int) {
			bar.update(done, total)
			if done == total/2 {
				if ferr := fault(step, "mid-package"); ferr != nil {
					panic(faultPanic{ferr})
				}
			}
		})
		bar.finish()
		if err != nil {
			return err
		}
		if s.Calib != nil {
			s.Calib.WriteReport(log, name)
		}
		return fault(step, "after "+name)
	}
	run := func(step int, body func() error) (err error) {
		if !opts.runs(step) {
			if opts.Only == 0 {
				fmt.Fprintf(log, "Skipping step %d: %s\n", step, names[step])
			}
			return nil
		}
		fmt.Fprintf(log, "Step %d: %s\n", step, names[step])
		if opts.StepHook != nil {
			opts.StepHook(step, false)
			defer opts.StepHook(step, true)
		}
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				fp, ok := r.(faultPanic)
				if !ok {
					panic(r)
				}
				err = fp.err
			}
			res.Times[step] = time.Since(start)
			if err == nil {
				fmt.Fprintf(log, "  done in %s\n", res.Times[step].Round(time.Millisecond))
			} else {
				err = fmt.Errorf("step %d (%s): %w", step, names[step], err)
			}
		}()
		return body()
	}
	steps := []func() error{
		nil,
		func() error { return part(1, arch.PartEmbeddings, 0) },
		func() error { return part(2, arch.PartLMHead, 0) },
		func() error {
			for _, i := range chunkList {
				if err := part(3, arch.PartFFN, i); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			for _, i := range chunkList {
				if err := part(4, arch.PartPrefill, i); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			for _, i := range chunkList {
				if err := combineChunk(s.Conv, opts.Output, i, log); err != nil {
					return err
				}
				if err := fault(5, fmt.Sprintf("after chunk %d", i)); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			if err := compileAll(s.Conv, opts, log); err != nil {
				return err
			}
			return fault(6, "after compile")
		},
		func() error {
			copied, err := copyTokenizer(opts.Model, opts.Output)
			if err != nil {
				return err
			}
			fmt.Fprintf(log, "  copied %s\n", strings.Join(copied, ", "))
			if err := fault(7, "after tokenizer"); err != nil {
				return err
			}
			meta := s.metaInfo(opts)
			meta.SlidingWindow = s.Conv.SlidingWindow()
			if s.Calib != nil {
				meta.CalibrationTokens, meta.CalibrationSHA256 = s.Calib.Set.Tokens, s.Calib.Text.SHA256
			}
			return writeFileAtomic(filepath.Join(opts.Output, "meta.yaml"), meta.Marshal())
		},
		func() error {
			if opts.SkipCheck || opts.Verify == nil {
				fmt.Fprintf(log, "  skipped (--skip-check)\n")
				return nil
			}
			return opts.Verify(opts.Output)
		},
	}
	if opts.Monolithic {
		steps = s.monolithicSteps(opts, log, part, fault)
	}
	for step := 1; step <= last; step++ {
		if err := run(step, steps[step]); err != nil {
			return res, err
		}
	}
	files, err := listOutputs(opts.Output)
	if err != nil {
		return res, err
	}
	res.Files = files
	writeTable(log, opts.Output, files)
	return res, nil
}

type faultPanic struct{ err error }
