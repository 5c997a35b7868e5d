package pipeline

import (
	"errors"
	"fmt"
	"io"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
)

// DefaultMaxChunkMB is ANEMLL's --max-chunk-mb default for --chunk auto.
const DefaultMaxChunkMB = 950

// MB is the unit of --max-chunk-mb (MiB, as ANEMLL's calc_chunk_split.py).
const MB = 1 << 20

// PlannedFile is one package a conversion would write, with its exact
// size (see coreml.PackageSize).
type PlannedFile struct {
	Name  string
	Bytes int64
	part  arch.Part
}

// ChunkPlan is the outcome of --chunk auto.
type ChunkPlan struct {
	// Chunks is the smallest chunk count whose FFN, prefill and combined
	// packages all stay within Limit bytes.
	Chunks int
	Limit  int64
	// Files lists every package of that conversion, in pipeline order.
	Files []PlannedFile
	// Largest is the biggest chunked package.
	Largest PlannedFile
}

// ErrTooLarge reports a part that exceeds --max-chunk-mb whatever the
// chunk count.
var ErrTooLarge = errors.New("over the size limit")

// PlanChunks finds the smallest chunk count for opts (NumChunks ignored)
// whose chunked packages (FFN, prefill and combined FFN_PF) are all at most
// limit bytes. Sizes are computed from the real tensor shapes and LUT
// widths of the packages the conversion would build (no weight is read or
// palettized). The embeddings and LM head are not chunked: if one of them
// alone exceeds the limit, or one layer does, it says what to change.
func PlanChunks(opts Options, limit int64) (*ChunkPlan, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pipeline: --max-chunk-mb must be positive")
	}
	opts.NumChunks = 1
	s, err := Open(opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	plan := &ChunkPlan{Limit: limit}
	size := func(conv Converter, p arch.Part, chunk int) (PlannedFile, error) {
		name, err := conv.FileName(p, chunk)
		if err != nil {
			return PlannedFile{}, err
		}
		pkg, err := conv.Part(p, chunk)
		if err != nil {
			return PlannedFile{}, err
		}
		r, err := coreml.PackageSize(pkg)
		if err != nil {
			return PlannedFile{}, fmt.Errorf("pipeline: size of %s: %w", name, err)
		}
		return PlannedFile{Name: name, Bytes: r.Total(), part: p}, nil
	}
	var fixed []PlannedFile
	for _, p := range []arch.Part{arch.PartEmbeddings, arch.PartLMHead} {
		f, err := size(s.Conv, p, 0)
		if err != nil {
			return nil, err
		}
		if f.Bytes > limit {
			flag := "--lut1"
			if p == arch.PartLMHead {
				flag = "--lut3"
			}
			return nil, fmt.Errorf("pipeline: %s alone is %.1f MB, over --max-chunk-mb %d, and chunking does not split it: palettize it (%s 6 or %s 4) or raise --max-chunk-mb: %w",
				f.Name, float64(f.Bytes)/MB, limit/MB, flag, flag, ErrTooLarge)
		}
		fixed = append(fixed, f)
	}
	layers := s.Config.NumHiddenLayers
	for n := 1; n <= layers; n++ {
		lo := decoderOptions(opts)
		lo.NumChunks, lo.Warn = n, nil
		conv, err := decoder.NewConverter(s.Config, s.ckpt, lo)
		if err != nil {
			return nil, err
		}
		var files []PlannedFile
		largest := PlannedFile{}
		over := false
		for i := 0; i < n && !over; i++ {
			for _, p := range []arch.Part{arch.PartFFN, arch.PartPrefill, arch.PartFFNPF} {
				f, err := size(conv, p, i)
				if err != nil {
					return nil, err
				}
				files = append(files, f)
				if f.Bytes > largest.Bytes {
					largest = f
				}
				if f.Bytes > limit {
					over = true
					break
				}
			}
		}
		if over {
			if n == layers {
				return nil, fmt.Errorf("pipeline: with one layer per chunk %s is still %.1f MB, over --max-chunk-mb %d: use a smaller --lut2 or raise --max-chunk-mb: %w",
					largest.Name, float64(largest.Bytes)/MB, limit/MB, ErrTooLarge)
			}
			continue
		}
		plan.Chunks, plan.Largest = n, largest
		plan.Files = append(append(plan.Files, fixed...), files...)
		return plan, nil
	}
	return nil, fmt.Errorf("pipeline: no chunk count fits") // unreachable: n = layers fits or errs
}

// Write prints the plan: the chunk count and every file with its size.
func (p *ChunkPlan) Write(w io.Writer) {
	fmt.Fprintf(w, "--chunk auto: %d chunk(s), largest chunked package %s %.1f MB (limit %d MB)\n",
		p.Chunks, p.Largest.Name, float64(p.Largest.Bytes)/MB, p.Limit/MB)
	for _, f := range p.Files {
		fmt.Fprintf(w, "  %-50s %10.1f MB\n", f.Name, float64(f.Bytes)/MB)
	}
}
