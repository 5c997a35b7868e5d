package runner

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/runtime"
)

// LoadOptions tunes LoadWith.
type LoadOptions struct {
	// LowMemory keeps only one FFN chunk's weights in memory: each chunk's
	// packages are loaded when it runs and released before the next one
	// is loaded. Prefill runs every batch through one chunk before the
	// next (chunks own disjoint layers of the KV cache, so the results are
	// those of the usual order, bit for bit); decode loads each chunk once
	// per token, which costs a package load per chunk per token when there
	// are several chunks.
	LowMemory bool
}

// lowMem holds the chunk that is loaded in low-memory mode.
type lowMem struct {
	chunks         []ChunkFiles
	cur            int // index of the loaded chunk
	infer, prefill *runtime.Function
}

// numChunks returns the number of FFN chunks.
func (m *Model) numChunks() int {
	if m.low != nil {
		return len(m.low.chunks)
	}
	return len(m.infer)
}

// load makes chunk i the loaded one, releasing the previous chunk first.
func (l *lowMem) load(i int) error {
	if l.infer != nil && l.cur == i {
		return nil
	}
	l.infer, l.prefill = nil, nil
	debug.FreeOSMemory() // give the released chunk's pages back before loading the next
	inf, pre, _, _, err := loadChunk(l.chunks[i])
	if err != nil {
		return fmt.Errorf("runner: chunk %d: %w", i+1, err)
	}
	l.cur, l.infer, l.prefill = i, inf, pre
	return nil
}

// chunkInfer returns the decode function of chunk i for a token at pos
// (infer_rotate past the window, when the packages have it).
func (m *Model) chunkInfer(i, pos int) (*runtime.Function, error) {
	if m.low == nil {
		return m.inferFuncs(pos)[i], nil
	}
	if err := m.low.load(i); err != nil {
		return nil, err
	}
	return m.low.infer, nil
}

// zero clears every state tensor (a fresh state without a function).
func (l *lowMem) zero(st *runtime.State) {
	for _, n := range st.Names() {
		t := st.Tensor(n)
		clear(t.F)
		clear(t.I)
	}
}

// prefillLow is Prefill in low-memory mode: the same batches, run chunk
// by chunk.
func (m *Model) prefillLow(ids []int) error {
	b := m.BatchSize
	type batch struct {
		in map[string]*runtime.Tensor
		h  *runtime.Tensor
	}
	var batches []batch
	for pos := 0; pos < len(ids); pos += b {
		start := min(pos, m.ContextLength-b)
		ids1 := make([]int, b)
		copy(ids1, ids[start:min(start+b, len(ids))])
		h, err := m.embedTokens(ids1)
		if err != nil {
			return err
		}
		positions := make([]int32, b)
		for i := range positions {
			positions[i] = int32(start + i)
		}
		in := map[string]*runtime.Tensor{
			"position_ids": runtime.NewInt32([]int{b}, positions),
			"causal_mask":  m.maskRows(start, b),
			"current_pos":  runtime.NewInt32([]int{1}, []int32{int32(start)}),
		}
		batches = append(batches, batch{in, h})
	}
	for i := range m.low.chunks {
		if err := m.low.load(i); err != nil {
			return err
		}
		for j := range batches {
			bt := &batches[j]
			bt.in["hidden_states"] = bt.h
			out, err := m.low.prefill.Predict(bt.in, m.state)
			if err != nil {
				return fmt.Errorf("runner: prefill chunk %d: %w", i+1, err)
			}
			bt.h = out["output_hidden_states"]
		}
	}
	return nil
}

// EstimateBytes estimates the memory the interpreter holds for a model:
// the weight files of every package it loads (weights stay as the
// packages store them), plus a quarter for activations, the KV cache and
// the Go heap's headroom.
func EstimateBytes(files *Files) int64 {
	paths := []string{files.Embeddings, files.LMHead}
	for _, c := range files.Chunks {
		paths = append(paths, c.Combined, c.FFN, c.Prefill)
	}
	var n int64
	for _, p := range paths {
		if p == "" {
			continue
		}
		filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					n += info.Size()
				}
			}
			return nil
		})
	}
	return n + n/4
}

// MemAvailable returns the kernel's estimate of memory available to new
// work (MemAvailable in /proc/meminfo), or 0 where unknown.
func MemAvailable() int64 { return memAvailable("/proc/meminfo") }

func memAvailable(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// NeedsLowMemory reports whether the model would not fit in the memory
// available (EstimateBytes above MemAvailable); false where unknown or
// with a single chunk (nothing to release).
func NeedsLowMemory(files *Files) bool {
	return needsLowMemory(files, MemAvailable())
}

func needsLowMemory(files *Files, avail int64) bool {
	return avail > 0 && len(files.Chunks) > 1 && EstimateBytes(files) > avail
}
