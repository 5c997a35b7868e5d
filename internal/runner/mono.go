package runner

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/runtime"
)

// ErrNoLogits is returned by Decode and Logits for models whose LM head
// computes the argmax inside the model (ANEMLL 0.3.5's --argmax): they
// return one winning token per step, so only greedy decoding is possible.
var ErrNoLogits = errors.New("runner: the LM head returns its argmax (converted with --argmax), not logits; sampling needs full logits (reconvert without --argmax)")

// Argmax names the outputs of an in-model argmax head.
const (
	argmaxIdx = "argmax_idx"
	argmaxVal = "argmax_val"
)

// InModelArgmax reports whether the LM head returns argmax_idx/argmax_val
// instead of logits.
func (m *Model) InModelArgmax() bool { return m.argmax }

// Monolithic reports whether the model is one monolithic package.
func (m *Model) Monolithic() bool { return m.monoInfer != nil }

// loadMonolithic loads the infer and prefill functions of a monolithic
// package (ANEMLL's <prefix>_monolithic_full[_lutN]).
func loadMonolithic(files *Files) (*Model, error) {
	mod, pkg, err := openModel(files.Monolithic)
	if err != nil {
		return nil, err
	}
	m := &Model{Metadata: pkg.Description.Metadata, headMeta: pkg.Description.Metadata.UserDefined}
	if m.monoInfer, err = mod.Function("infer"); err != nil {
		return nil, fmt.Errorf("runner: %s: %w", files.Monolithic, err)
	}
	if m.monoPrefill, err = mod.Function("prefill"); err != nil {
		return nil, fmt.Errorf("runner: %s: %w", files.Monolithic, err)
	}
	if err := m.findHeadOutputs(m.monoInfer.Outputs(), files); err != nil {
		return nil, fmt.Errorf("runner: %s: %w", files.Monolithic, err)
	}
	if m.ContextLength, err = dim(m.monoInfer, "causal_mask", -1); err != nil {
		return nil, err
	}
	if m.BatchSize, err = dim(m.monoPrefill, "input_ids", 1); err != nil {
		return nil, err
	}
	if m.StateLength, err = dim(m.monoPrefill, "model_model_kv_cache_0", 2); err != nil {
		return nil, err
	}
	if m.BatchSize > m.ContextLength {
		return nil, fmt.Errorf("runner: batch size %d exceeds context length %d", m.BatchSize, m.ContextLength)
	}
	m.Reset()
	return m, nil
}

// findHeadOutputs notes whether the head returns argmax or logits and, for
// argmax, where each split starts in the vocabulary: meta.yaml's
// lm_head_chunk_sizes, else the package's com.anemll.lm_head_chunk_sizes,
// else com.anemll.vocab_size split as evenly as ANEMLL splits it.
func (m *Model) findHeadOutputs(outs []string, files *Files) error {
	has := map[string]bool{}
	for _, o := range outs {
		has[o] = true
	}
	if !has[argmaxIdx] || !has[argmaxVal] {
		m.logits = sortedLogits(outs)
		if len(m.logits) == 0 {
			return fmt.Errorf("no logits or argmax_idx/argmax_val outputs")
		}
		return nil
	}
	m.argmax = true
	sizes := files.LMHeadChunkSizes
	if len(sizes) == 0 {
		sizes = m.headMeta.chunkSizes()
	}
	m.chunkSizes = sizes
	return nil
}

// headMetadata holds the LM head package's argmax keys.
type headMetadata map[string]string

func (h headMetadata) chunkSizes() []int {
	if s := h["com.anemll.lm_head_chunk_sizes"]; s != "" {
		var out []int
		for _, p := range strings.Split(strings.Trim(s, "[] "), ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n <= 0 {
				return nil
			}
			out = append(out, n)
		}
		return out
	}
	return nil
}

// offsets returns the first token id of each of k splits.
func (m *Model) offsets(k int) ([]int, error) {
	sizes := m.chunkSizes
	if len(sizes) != k {
		v, err := strconv.Atoi(m.headMeta["com.anemll.vocab_size"])
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("runner: the argmax LM head has %d splits but neither meta.yaml lm_head_chunk_sizes nor package metadata give their sizes", k)
		}
		sizes = make([]int, k)
		for i := range sizes {
			sizes[i] = v / k
			if i < v%k {
				sizes[i]++
			}
		}
	}
	off := make([]int, k)
	for i := 1; i < k; i++ {
		off[i] = off[i-1] + sizes[i-1]
	}
	return off, nil
}

// winner maps the head's argmax outputs to a token id: the split with the
// largest value (the first on ties, as numpy's argmax) and its local
// index plus the split's offset. It also returns the winning logit.
func (m *Model) winner(out map[string]*runtime.Tensor) (int, float32, error) {
	idx, val := out[argmaxIdx], out[argmaxVal]
	if idx == nil || val == nil {
		return 0, 0, fmt.Errorf("runner: LM head returned no argmax_idx/argmax_val")
	}
	vals := val.Float32s()
	ids := idx.I
	if len(ids) != len(vals) || len(ids) == 0 {
		return 0, 0, fmt.Errorf("runner: argmax_idx has %d entries, argmax_val %d", len(ids), len(vals))
	}
	off, err := m.offsets(len(ids))
	if err != nil {
		return 0, 0, err
	}
	best := Argmax(vals)
	return off[best] + int(ids[best]), vals[best], nil
}

// Greedy runs token id at position pos (as Decode) and returns the most
// likely next token: the in-model argmax when the head has one, else the
// argmax of the logits (only ids below limit, if limit > 0).
func (m *Model) Greedy(id, pos, limit int) (int, error) {
	if !m.argmax {
		logits, err := m.Decode(id, pos)
		if err != nil {
			return 0, err
		}
		if limit > 0 && limit < len(logits) {
			logits = logits[:limit]
		}
		return Argmax(logits), nil
	}
	out, err := m.step(id, pos)
	if err != nil {
		return 0, err
	}
	tok, _, err := m.winner(out)
	return tok, err
}

// Winner is Greedy for an in-model argmax head that also returns the
// winning logit.
func (m *Model) Winner(id, pos int) (int, float32, error) {
	if !m.argmax {
		return 0, 0, fmt.Errorf("runner: the LM head returns logits, not an in-model argmax")
	}
	out, err := m.step(id, pos)
	if err != nil {
		return 0, 0, err
	}
	return m.winner(out)
}

// step runs one decode step and returns the LM head's (or monolithic
// function's) outputs.
func (m *Model) step(id, pos int) (map[string]*runtime.Tensor, error) {
	if pos < 0 || pos >= m.ContextLength {
		return nil, fmt.Errorf("runner: position %d is outside the context (0..%d)", pos, m.ContextLength-1)
	}
	p := runtime.NewInt32([]int{1}, []int32{int32(pos)})
	in := map[string]*runtime.Tensor{"position_ids": p, "current_pos": p, "causal_mask": m.maskRows(pos, 1)}
	if m.monoInfer != nil {
		in["input_ids"] = runtime.NewInt32([]int{1, 1}, []int32{int32(id)})
		out, err := m.monoInfer.Predict(in, m.state)
		if err != nil {
			return nil, fmt.Errorf("runner: monolithic infer: %w", err)
		}
		return out, nil
	}
	h, err := m.decodeHidden(id, pos)
	if err != nil {
		return nil, err
	}
	out, err := m.head.Predict(map[string]*runtime.Tensor{"hidden_states": h}, nil)
	if err != nil {
		return nil, fmt.Errorf("runner: LM head: %w", err)
	}
	return out, nil
}

// joinLogits concatenates the logits outputs in order.
func (m *Model) joinLogits(out map[string]*runtime.Tensor) []float32 {
	var logits []float32
	for _, name := range m.logits {
		logits = append(logits, out[name].Float32s()...)
	}
	return logits
}

// prefillMonolithic is Prefill for a monolithic package.
func (m *Model) prefillBatch(ids []int, start int) error {
	b := m.BatchSize
	t := make([]int32, b)
	for i := range t {
		if i < len(ids) {
			t[i] = int32(ids[i])
		}
	}
	positions := make([]int32, b)
	for i := range positions {
		positions[i] = int32(start + i)
	}
	in := map[string]*runtime.Tensor{
		"input_ids":    runtime.NewInt32([]int{1, b}, t),
		"position_ids": runtime.NewInt32([]int{b}, positions),
		"causal_mask":  m.maskRows(start, b),
		"current_pos":  runtime.NewInt32([]int{1}, []int32{int32(start)}),
	}
	if _, err := m.monoPrefill.Predict(in, m.state); err != nil {
		return fmt.Errorf("runner: monolithic prefill: %w", err)
	}
	return nil
}

func sortedLogits(outs []string) []string {
	var l []string
	for _, o := range outs {
		if strings.HasPrefix(o, "logits") {
			l = append(l, o)
		}
	}
	sortLogitNames(l)
	return l
}
