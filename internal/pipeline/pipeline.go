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
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/llama"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/quant"
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
	LUT llama.LUTBits
	// LUTGroupSize is the palettization group size (default 8).
	LUTGroupSize int
	// Restart skips the steps before it (1–8); Only runs just that step.
	Restart, Only int
	// SkipCheck skips step 8 (verification).
	SkipCheck bool
	// Log receives step lines, progress and the final table (nil: quiet).
	Log io.Writer
	// Verify runs step 8 on the finished output directory.
	Verify func(dir string) error
	// Compiler compiles a package into outDir; nil looks for xcrun.
	Compiler func(pkg, outDir string) error
	// StepHook, if set, is called when a step starts (done false) and
	// ends (done true); benchmarks measure per-step memory with it.
	StepHook func(step int, done bool)

	// fault, if set, is called at points inside steps; an error stops the
	// run there (tests simulate crashes with it).
	fault func(step int, where string) error
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

// Converter builds the packages of one model family.
type Converter interface {
	Part(p arch.Part, chunk int) (*coreml.Package, error)
	FileName(p arch.Part, chunk int) (string, error)
	Layout() []arch.Range
	Options() llama.Options
}

// families maps config.json's model_type to a converter constructor.
var families = map[string]func(cfg *hf.Config, ckpt *hf.Checkpoint, opts llama.Options) (Converter, error){
	"llama": func(cfg *hf.Config, ckpt *hf.Checkpoint, opts llama.Options) (Converter, error) {
		return llama.NewConverter(cfg, ckpt, opts)
	},
}

// Palettize adapts internal/quant to the converter's LUT hook.
func Palettize(w []uint16, shape []int64, bits, groupSize int) ([]uint8, []uint16, error) {
	p, err := quant.Palettize(w, shape, quant.Options{Bits: bits, GroupSize: groupSize})
	if err != nil {
		return nil, nil, err
	}
	return p.Indices, p.LUT, nil
}

// Session is an open checkpoint with its converter.
type Session struct {
	Config *hf.Config
	ckpt   *hf.Checkpoint
	Conv   Converter
	opts   Options
}

// Open loads and checks the checkpoint and options: config.json, the
// safetensors files, the architecture, and the conversion flags.
func Open(opts Options) (*Session, error) {
	if opts.Model == "" {
		return nil, errors.New("pipeline: no model directory given (--model DIR)")
	}
	if _, err := os.Stat(filepath.Join(opts.Model, "config.json")); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("pipeline: %s not found: --model must be a Hugging Face checkpoint directory (config.json + *.safetensors)", filepath.Join(opts.Model, "config.json"))
	}
	cfg, err := hf.LoadConfig(opts.Model)
	if err != nil {
		return nil, err
	}
	mk, ok := families[cfg.ModelType]
	if !ok {
		return nil, fmt.Errorf("pipeline: %s: model_type %q is not supported (supported: llama)", filepath.Join(opts.Model, "config.json"), cfg.ModelType)
	}
	ckpt, err := hf.OpenCheckpoint(opts.Model)
	if err != nil {
		return nil, err
	}
	lo := llama.Options{
		ContextLength: opts.ContextLength, StateLength: opts.StateLength, BatchSize: opts.BatchSize,
		NumChunks: opts.NumChunks, Prefix: opts.Prefix, LUT: opts.LUT, LUTGroupSize: opts.LUTGroupSize,
		Palettize: Palettize,
	}
	conv, err := mk(cfg, ckpt, lo)
	if err != nil {
		ckpt.Close()
		return nil, err
	}
	return &Session{Config: cfg, ckpt: ckpt, Conv: conv, opts: opts}, nil
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
	if p == arch.PartPrefill {
		// The decode chunk written before holds the same palettized
		// weights: read them back instead of palettizing again.
		if ffnName, err := s.Conv.FileName(arch.PartFFN, chunk); err == nil {
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
				v, srcV := op.Inputs[i].Args[0].Value, from.Inputs[i].Args[0].Value
				v.Data, v.Source = nil, srcV.Source
			}
			reused++
		}
	}
	return reused
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
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("pipeline: remove stale %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// Result lists what a run produced.
type Result struct {
	Files []string
	// Times holds each step's wall time (index = step number).
	Times [9]time.Duration
}

// Run executes the pipeline.
func Run(opts Options) (*Result, error) {
	if opts.Restart == 0 {
		opts.Restart = 1
	}
	if opts.Restart < 1 || opts.Restart > 8 || opts.Only < 0 || opts.Only > 8 {
		return nil, fmt.Errorf("pipeline: --restart and --only take a step number from 1 to 8")
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	s, err := Open(opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := prepareOutput(opts.Output); err != nil {
		return nil, err
	}
	lo := s.Conv.Options()
	chunks := len(s.Conv.Layout())
	res := &Result{}
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
		return fault(step, "after "+name)
	}
	run := func(step int, body func() error) (err error) {
		if step < opts.Restart || opts.Only != 0 && opts.Only != step {
			if opts.Only == 0 {
				fmt.Fprintf(log, "Skipping step %d: %s\n", step, Steps[step])
			}
			return nil
		}
		fmt.Fprintf(log, "Step %d: %s\n", step, Steps[step])
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
				err = fmt.Errorf("step %d (%s): %w", step, Steps[step], err)
			}
		}()
		return body()
	}
	steps := []func() error{
		nil,
		func() error { return part(1, arch.PartEmbeddings, 0) },
		func() error { return part(2, arch.PartLMHead, 0) },
		func() error {
			for i := 0; i < chunks; i++ {
				if err := part(3, arch.PartFFN, i); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			for i := 0; i < chunks; i++ {
				if err := part(4, arch.PartPrefill, i); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			for i := 0; i < chunks; i++ {
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
			meta := MetaInfo{
				ModelName: filepath.Base(filepath.Clean(opts.Model)), Version: llama.Version,
				Architecture: s.Config.ModelType, ContextLength: lo.ContextLength, BatchSize: lo.BatchSize,
				LUTEmbeddings: lo.LUT.Embeddings, LUTFFN: lo.LUT.FFN, LUTLMHead: lo.LUT.LMHead,
				NumChunks: chunks, Prefix: lo.Prefix, SplitLMHead: lo.SplitLMHead,
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
	for step := 1; step <= 8; step++ {
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

// combineChunk merges chunk i's FFN and prefill packages from dir into the
// FFN_PF package, with ANEMLL's combined metadata.
func combineChunk(conv Converter, dir string, i int, log io.Writer) error {
	open := func(p arch.Part) (*coreml.Package, error) {
		name, err := conv.FileName(p, i)
		if err != nil {
			return nil, err
		}
		pkg, err := coreml.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w (run steps 3 and 4 first: --restart 3)", err)
		}
		return pkg, nil
	}
	ffn, err := open(arch.PartFFN)
	if err != nil {
		return err
	}
	defer ffn.Close()
	pf, err := open(arch.PartPrefill)
	if err != nil {
		return err
	}
	defer pf.Close()
	out, err := CombinePackages(ffn, pf)
	if err != nil {
		return err
	}
	name, err := conv.FileName(arch.PartFFNPF, i)
	if err != nil {
		return err
	}
	bar := newProgress(log, "  "+name)
	err = coreml.Write(out, filepath.Join(dir, name), coreml.WriteOptions{Overwrite: true, Progress: bar.update})
	bar.finish()
	debug.FreeOSMemory()
	return err
}

// CombinePackages makes ANEMLL's multifunction FFN+prefill package:
// functions "infer" (default) and "prefill", metadata from the FFN package
// with the combined short description and the prefill batch size.
func CombinePackages(ffn, prefill *coreml.Package) (*coreml.Package, error) {
	out, err := coreml.Combine(coreml.Part{Function: "infer", Package: ffn}, coreml.Part{Function: "prefill", Package: prefill})
	if err != nil {
		return nil, err
	}
	md := &out.Description.Metadata
	md.ShortDescription = "Anemll Model: Multifunction FFN+Prefill"
	if md.UserDefined == nil {
		md.UserDefined = map[string]string{}
	}
	if b, ok := prefill.Description.Metadata.UserDefined["com.anemll.batch_size"]; ok {
		md.UserDefined["com.anemll.batch_size"] = b
	}
	return out, nil
}

// compileAll compiles the packages runners load (embeddings, LM head,
// combined chunks) to .mlmodelc where Apple's compiler exists.
func compileAll(conv Converter, opts Options, log io.Writer) error {
	var pkgs []string
	for _, p := range []arch.Part{arch.PartEmbeddings, arch.PartLMHead} {
		n, err := conv.FileName(p, 0)
		if err != nil {
			return err
		}
		pkgs = append(pkgs, filepath.Join(opts.Output, n))
	}
	for i := range conv.Layout() {
		n, err := conv.FileName(arch.PartFFNPF, i)
		if err != nil {
			return err
		}
		pkgs = append(pkgs, filepath.Join(opts.Output, n))
	}
	return Compile(pkgs, opts.Output, opts.Compiler, log)
}

// Compile compiles each package into outDir with compile, or with Xcode's
// `xcrun coremlcompiler compile` when compile is nil. Where xcrun is
// missing it explains that .mlpackage files work as they are and returns
// nil.
func Compile(pkgs []string, outDir string, compile func(pkg, outDir string) error, log io.Writer) error {
	if compile == nil {
		xcrun, err := exec.LookPath("xcrun")
		if err != nil {
			fmt.Fprintln(log, "  Compiling to .mlmodelc needs Xcode's coremlcompiler (xcrun), which this machine lacks.")
			fmt.Fprintln(log, "  The .mlpackage files work as they are: Core ML compiles them on the device")
			fmt.Fprintln(log, "  (MLModel.compileModel(at:)), and anemll chat/verify run them directly. Continuing.")
			return nil
		}
		compile = func(pkg, outDir string) error {
			cmd := exec.Command(xcrun, "coremlcompiler", "compile", pkg, outDir)
			cmd.Stdout, cmd.Stderr = log, log
			return cmd.Run()
		}
	}
	for _, p := range pkgs {
		fmt.Fprintf(log, "  compiling %s\n", filepath.Base(p))
		if err := compile(p, outDir); err != nil {
			return fmt.Errorf("compile %s: %w", filepath.Base(p), err)
		}
	}
	return nil
}

// listOutputs returns the entries of dir, sorted, without hidden ones.
func listOutputs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func dirSize(path string) int64 {
	var n int64
	filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func writeTable(w io.Writer, dir string, files []string) {
	fmt.Fprintf(w, "\nOutput in %s:\n", dir)
	var total int64
	for _, f := range files {
		n := dirSize(filepath.Join(dir, f))
		total += n
		fmt.Fprintf(w, "  %-48s %12s\n", f, humanBytes(n))
	}
	fmt.Fprintf(w, "  %-48s %12s\n", "total", humanBytes(total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
