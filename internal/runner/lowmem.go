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

	"github.com/anemll/anemll/internal/coreml"
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

// LowMemory reports whether the model runs in low-memory mode (asked for
// and possible: several chunks, no rotating window caches).
func (m *Model) LowMemory() bool { return m.low != nil }

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
	st.Reset()
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
func EstimateBytes(files *Files) int64 { return headroom(packageBytes(files)) }

// headroom adds a quarter to n for activations, the KV cache and the Go
// heap's headroom.
func headroom(n int64) int64 { return n + n/4 }

// packageBytes sums the sizes of the files of every package in files.
func packageBytes(files *Files) int64 {
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
	return n
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

// PeekContextLength returns the context length of the model in files (the
// last dimension of the decode function's causal_mask) from the first
// chunk's program alone, without loading any weight: callers that run the
// reference before loading the packages cut their tokens with it.
func PeekContextLength(files *Files) (int, error) {
	path := files.Monolithic
	if path == "" {
		if len(files.Chunks) == 0 {
			return 0, fmt.Errorf("runner: no FFN chunks")
		}
		c := files.Chunks[0]
		path = c.Combined
		if path == "" {
			path = c.FFN
		}
	}
	pkg, err := coreml.Open(path)
	if err != nil {
		return 0, err
	}
	defer pkg.Close()
	for _, f := range pkg.Program.Functions {
		if f.Name != "infer" && f.Name != "main" && len(pkg.Program.Functions) > 1 {
			continue
		}
		if in, ok := f.Input("causal_mask"); ok {
			t := in.Type
			if n := len(t.Shape); n > 0 && t.Shape[n-1] > 0 {
				return int(t.Shape[n-1]), nil
			}
		}
	}
	return 0, fmt.Errorf("runner: %s: no decode function with a fixed causal_mask input", path)
}

// MinBytes estimates the least memory the interpreter needs for the model
// in files: with low set, the embeddings, the LM head and the largest
// chunk (one chunk is loaded at a time), else every package; a quarter
// is added as in EstimateBytes.
func MinBytes(files *Files, low bool) int64 {
	if !low || len(files.Chunks) < 2 {
		return EstimateBytes(files)
	}
	chunks := make([]int64, len(files.Chunks))
	for i, c := range files.Chunks {
		chunks[i] = packageBytes(&Files{Chunks: []ChunkFiles{c}})
	}
	return LowMemoryBytes(packageBytes(&Files{Embeddings: files.Embeddings, LMHead: files.LMHead}), chunks)
}

// LowMemoryBytes is MinBytes's low-memory rule on package sizes: fixed
// bytes always loaded (embeddings and LM head) plus the largest of chunks,
// each with EstimateBytes's quarter added. Callers that size packages not
// yet written use it too.
func LowMemoryBytes(fixed int64, chunks []int64) int64 {
	var largest int64
	for _, c := range chunks {
		largest = max(largest, headroom(c))
	}
	return headroom(fixed) + largest
}

// CheckMemory reports, in one line, when the model in files cannot run in
// the memory available (MemAvailable) even in low-memory mode, which
// needs the least; nil where the available memory is unknown.
func CheckMemory(files *Files) error { return checkMemory(files, MemAvailable()) }

func checkMemory(files *Files, avail int64) error {
	if avail <= 0 {
		return nil
	}
	chunked := files.Monolithic == "" && len(files.Chunks) > 1
	need := MinBytes(files, chunked)
	if need <= avail {
		return nil
	}
	name := files.Dir
	if name == "" {
		name = filepath.Dir(files.Embeddings + files.Monolithic)
	}
	how, fix := "with every package loaded", "or convert with more chunks (--chunk N), which low-memory mode loads one at a time"
	if chunked {
		how = "with one chunk loaded at a time"
	}
	return fmt.Errorf("runner: the packages in %s need about %.1f GiB on the interpreter %s, and %.1f GiB is available: free memory %s",
		name, float64(need)/(1<<30), how, float64(avail)/(1<<30), fix)
}
