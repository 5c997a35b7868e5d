package pipeline

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
)

// monolithicSteps returns the bodies of MonolithicSteps: the monolithic
// infer and prefill packages, their combination into
// <prefix>_monolithic_full[_lutN] (functions infer and prefill, each
// weight stored once), compile, tokenizer and meta.yaml, verify.
func (s *Session) monolithicSteps(opts Options, log io.Writer, part func(step int, p arch.Part, chunk int) error, fault func(step int, where string) error) []func() error {
	return []func() error{
		nil,
		func() error { return part(1, arch.PartMonolithic, 0) },
		func() error { return part(2, arch.PartMonolithicPrefill, 0) },
		func() error {
			if err := s.combineMonolithic(opts.Output, log); err != nil {
				return err
			}
			return fault(3, "after combine")
		},
		func() error {
			n, err := s.Conv.FileName(arch.PartMonolithicFull, 0)
			if err != nil {
				return err
			}
			return Compile([]string{filepath.Join(opts.Output, n)}, opts.Output, opts.Compiler, log)
		},
		func() error {
			copied, err := copyTokenizer(opts.Model, opts.Output)
			if err != nil {
				return err
			}
			fmt.Fprintf(log, "  copied %s\n", strings.Join(copied, ", "))
			return writeFileAtomic(filepath.Join(opts.Output, "meta.yaml"), s.metaInfo(opts).Marshal())
		},
		func() error {
			if opts.SkipCheck || opts.Verify == nil {
				fmt.Fprintf(log, "  skipped (--skip-check)\n")
				return nil
			}
			return opts.Verify(opts.Output)
		},
	}
}

// combineMonolithic merges the monolithic infer and prefill packages in dir
// into the full package, as ANEMLL's combine_models.py --monolithic.
func (s *Session) combineMonolithic(dir string, log io.Writer) error {
	var paths [3]string
	for i, p := range arch.MonolithicParts {
		n, err := s.Conv.FileName(p, 0)
		if err != nil {
			return err
		}
		paths[i] = filepath.Join(dir, n)
	}
	inf, err := coreml.Open(paths[0])
	if err != nil {
		return fmt.Errorf("%w (run steps 1 and 2 first: --restart 1)", err)
	}
	defer inf.Close()
	pre, err := coreml.Open(paths[1])
	if err != nil {
		return fmt.Errorf("%w (run step 2 first: --restart 2)", err)
	}
	defer pre.Close()
	pkg, err := coreml.Combine(coreml.Part{Function: "infer", Package: inf}, coreml.Part{Function: "prefill", Package: pre})
	if err != nil {
		return err
	}
	conv, ok := s.Conv.(*decoder.Converter)
	if !ok {
		return fmt.Errorf("pipeline: monolithic models need the decoder converter")
	}
	pkg.Description.Metadata = conv.MonolithicFullMetadata(inf.Description.Metadata)
	bar := newProgress(log, "  "+filepath.Base(paths[2]))
	err = coreml.Write(pkg, paths[2], coreml.WriteOptions{Overwrite: true, Progress: bar.update})
	bar.finish()
	debug.FreeOSMemory()
	return err
}

// metaInfo gathers what meta.yaml records for this run.
func (s *Session) metaInfo(opts Options) MetaInfo {
	lo := s.Conv.Options()
	m := MetaInfo{
		ModelName: filepath.Base(filepath.Clean(opts.Model)), Version: decoder.Version,
		Architecture: s.Config.ModelType, ContextLength: lo.ContextLength, BatchSize: lo.BatchSize,
		LUTEmbeddings: lo.LUT.Embeddings, LUTFFN: lo.LUT.FFN, LUTLMHead: lo.LUT.LMHead,
		NumChunks: len(s.Conv.Layout()), Prefix: lo.Prefix, SplitLMHead: lo.SplitLMHead,
		Argmax: lo.Argmax, Monolithic: opts.Monolithic, VocabSize: s.Config.VocabSize,
		PerChannel: opts.LUTGroups,
	}
	if c, ok := s.Conv.(*decoder.Converter); ok {
		m.LMHeadChunkSizes = c.LMHeadChunkSizes()
	}
	return m
}
