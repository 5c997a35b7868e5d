package pipeline

import (
	"fmt"
	"path/filepath"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/runner"
)

// diskSlack is added per planned package for directories and file-system
// blocks beyond the files' exact sizes.
const diskSlack = 64 << 10

// plannedOutputs lists the packages the steps that will run write, with
// their exact sizes (coreml.PackageSize: from tensor types and LUT widths,
// nothing read or palettized).
func (s *Session) plannedOutputs(opts Options, chunkList []int) ([]PlannedFile, error) {
	type job struct {
		step  int
		part  arch.Part
		chunk int
	}
	var jobs []job
	if opts.Monolithic {
		for i, p := range arch.MonolithicParts {
			jobs = append(jobs, job{i + 1, p, 0})
		}
	} else {
		jobs = append(jobs, job{1, arch.PartEmbeddings, 0}, job{2, arch.PartLMHead, 0})
		for k, p := range []arch.Part{arch.PartFFN, arch.PartPrefill, arch.PartFFNPF} {
			for _, i := range chunkList {
				jobs = append(jobs, job{3 + k, p, i})
			}
		}
	}
	var files []PlannedFile
	for _, j := range jobs {
		if !opts.runs(j.step) {
			continue
		}
		name, err := s.Conv.FileName(j.part, j.chunk)
		if err != nil {
			return nil, err
		}
		pkg, err := s.Conv.Part(j.part, j.chunk)
		if err != nil {
			return nil, err
		}
		r, err := coreml.PackageSize(pkg)
		if err != nil {
			return nil, fmt.Errorf("pipeline: size of %s: %w", name, err)
		}
		files = append(files, PlannedFile{Name: name, Bytes: r.Total(), part: j.part})
	}
	return files, nil
}

// checkDiskSpace refuses, before anything is written, a run whose
// packages do not fit in the free space of the output directory's file
// system. Packages already there are replaced (their space counts as
// free, but one at a time: each is written beside the old one, then
// renamed over it).
func checkDiskSpace(dir string, files []PlannedFile, free func(string) (int64, error)) error {
	if len(files) == 0 || free == nil {
		return nil
	}
	avail, err := free(dir)
	if err != nil || avail < 0 {
		return nil // unknown: do not guess
	}
	var need, total, overlap int64
	for _, f := range files {
		old := DirSize(filepath.Join(dir, f.Name))
		need += max(f.Bytes-old, 0) + diskSlack
		overlap = max(overlap, min(old, f.Bytes))
		total += f.Bytes
	}
	need += overlap
	if need <= avail {
		return nil
	}
	return fmt.Errorf("pipeline: not enough disk space in %s: the %d packages to write take %.2f GiB (%.2f GiB more than what they replace) and %.2f GiB is free; free space or choose another --output",
		dir, len(files), gibs(total), gibs(need), gibs(avail))
}

func gibs(n int64) float64 { return float64(n) / (1 << 30) }

// checkVerifyMemory refuses, before anything is written, a run whose
// verification (step verifyStep) could not load the packages it is about
// to write on the interpreter within the memory available (avail; 0 or
// less: unknown), by runner.LowMemoryBytes's rule: the embeddings, the LM
// head and the largest chunk (the runner loads one chunk at a time when
// memory is short).
func checkVerifyMemory(opts Options, verifyStep int, files []PlannedFile, chunks int, avail int64) error {
	if avail <= 0 || opts.SkipCheck || opts.Verify == nil || opts.Only != 0 && opts.Only != verifyStep {
		return nil
	}
	var fixed int64
	var chunkBytes []int64
	for _, f := range files {
		switch f.part {
		case arch.PartFFNPF:
			if chunks > 1 {
				chunkBytes = append(chunkBytes, f.Bytes)
			} else {
				fixed += f.Bytes
			}
		case arch.PartEmbeddings, arch.PartLMHead, arch.PartMonolithicFull:
			fixed += f.Bytes
		}
	}
	need := runner.LowMemoryBytes(fixed, chunkBytes)
	if need <= avail {
		return nil
	}
	return fmt.Errorf("pipeline: step %d (verification) would need about %.1f GiB to run the packages on the interpreter and %.1f GiB is available: free memory, convert with more chunks (--chunk N), or skip the check (--skip-check)",
		verifyStep, gibs(need), gibs(avail))
}
