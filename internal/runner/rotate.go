package runner

import (
	"fmt"
	"slices"
	"strings"

	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/runtime"
)

// Driver selects how Prefill splits a prompt.
type Driver int

const (
	// DriverPadded runs the prompt in batches of BatchSize through the
	// prefill functions, the last batch moved back to end inside the
	// context and zero-padded (this project's runner; right for packages
	// whose caches are indexed by absolute position).
	DriverPadded Driver = iota
	// DriverChatPy splits the prompt as ANEMLL 0.3.5's chat.py does
	// (PrefillChatPy). Load chooses it for packages with *_rotate
	// functions, whose window caches shift on every write: a repeated or
	// padded token would rotate them.
	DriverChatPy
)

// String names the driver.
func (d Driver) String() string {
	switch d {
	case DriverPadded:
		return "padded"
	case DriverChatPy:
		return "chat.py"
	}
	return fmt.Sprintf("Driver(%d)", int(d))
}

// rotateFuncs are one chunk's ANEMLL 0.3.5 rotate functions: infer_rotate
// and prefill_rotate run decode and prefill once the position (or batch
// start) is past the sliding window, shifting the window cache.
type rotateFuncs struct {
	infer, prefill *runtime.Function
}

// combinedRotate returns the rotate functions of a multifunction package
// (both or neither).
func combinedRotate(path string, m *runtime.Model) (rotateFuncs, error) {
	names := m.FunctionNames()
	hasI, hasP := slices.Contains(names, "infer_rotate"), slices.Contains(names, "prefill_rotate")
	if !hasI && !hasP {
		return rotateFuncs{}, nil
	}
	if !hasI || !hasP {
		return rotateFuncs{}, fmt.Errorf("runner: %s has only one of infer_rotate and prefill_rotate (functions %v); reconvert with both", path, names)
	}
	var r rotateFuncs
	var err error
	if r.infer, err = m.Function("infer_rotate"); err != nil {
		return r, fmt.Errorf("runner: %s: %w", path, err)
	}
	if r.prefill, err = m.Function("prefill_rotate"); err != nil {
		return r, fmt.Errorf("runner: %s: %w", path, err)
	}
	return r, nil
}

// separateRotate loads the FFN_rotate and prefill_rotate packages of a
// chunk (both or neither).
func separateRotate(c ChunkFiles) (rotateFuncs, error) {
	if c.FFNRotate == "" && c.PrefillRotate == "" {
		return rotateFuncs{}, nil
	}
	if c.FFNRotate == "" || c.PrefillRotate == "" {
		return rotateFuncs{}, fmt.Errorf("runner: chunk %s has only one of the FFN_rotate and prefill_rotate packages", c.FFN)
	}
	var r rotateFuncs
	var err error
	if r.infer, _, err = loadFunction(c.FFNRotate, ""); err != nil {
		return r, err
	}
	if r.prefill, _, err = loadFunction(c.PrefillRotate, ""); err != nil {
		return r, err
	}
	return r, nil
}

// functions returns every loaded FFN function with a label for errors.
func (m *Model) functions() ([]*runtime.Function, []string) {
	var fs []*runtime.Function
	var labels []string
	add := func(f *runtime.Function, chunk int, what string) {
		if f != nil {
			fs = append(fs, f)
			labels = append(labels, fmt.Sprintf("chunk %d %s", chunk+1, what))
		}
	}
	for i := range m.infer {
		add(m.prefill[i], i, "prefill")
		add(m.infer[i], i, "infer")
		add(m.rotate[i].prefill, i, "prefill_rotate")
		add(m.rotate[i].infer, i, "infer_rotate")
	}
	return fs, labels
}

// stateDecl is one declared state tensor.
type stateDecl struct {
	dtype mil.DType
	shape []int64
}

func states(f *runtime.Function) map[string]stateDecl {
	out := map[string]stateDecl{}
	for _, in := range f.Inputs() {
		if in.Type.Kind == mil.KindState && in.Type.Elem != nil {
			out[in.Name] = stateDecl{in.Type.Elem.DType, in.Type.Elem.Shape}
		}
	}
	return out
}

// setupStates checks that the functions agree on every state they declare
// (name, dtype and shape), picks a function declaring all of them to make
// fresh states from, and sets StateLength: the length (axis 2) of
// model_model_kv_cache_0, else of model_model_kv_cache_global (ANEMLL
// 0.3.5's split cache: its local cache only holds the window), else the
// longest cache.
func (m *Model) setupStates() error {
	fs, labels := m.functions()
	all := map[string]stateDecl{}
	where := map[string]string{}
	for i, f := range fs {
		for name, d := range states(f) {
			prev, ok := all[name]
			if !ok {
				all[name], where[name] = d, labels[i]
				continue
			}
			if prev.dtype != d.dtype || !slices.Equal(prev.shape, d.shape) {
				return fmt.Errorf("runner: state %q is %s%v in %s but %s%v in %s; the chunks come from different conversions",
					name, prev.dtype, prev.shape, where[name], d.dtype, d.shape, labels[i])
			}
		}
	}
	if len(all) == 0 {
		return fmt.Errorf("runner: the FFN functions declare no KV-cache state")
	}
	m.stateFrom = nil
	for _, f := range fs {
		if len(states(f)) == len(all) {
			m.stateFrom = f
			break
		}
	}
	if m.stateFrom == nil {
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		slices.Sort(names)
		return fmt.Errorf("runner: no FFN function declares all the states %s; this runner shares one state set across chunks", strings.Join(names, ", "))
	}
	length := func(name string) int {
		if d, ok := all[name]; ok && len(d.shape) >= 3 {
			return int(d.shape[2])
		}
		return 0
	}
	m.StateLength = length("model_model_kv_cache_0")
	if m.StateLength == 0 {
		m.StateLength = length("model_model_kv_cache_global")
	}
	if m.StateLength == 0 {
		for name := range all {
			m.StateLength = max(m.StateLength, length(name))
		}
	}
	if m.StateLength == 0 {
		return fmt.Errorf("runner: no state of rank ≥ 3 to read the state length from")
	}
	return nil
}

// setupRotate decides how the rotate functions are used: every chunk must
// have them or none; the window comes from meta.yaml's sliding_window,
// else from the length of the model_model_kv_cache_local state (ANEMLL
// 0.3.5 sizes it to the window).
func (m *Model) setupRotate(files *Files) error {
	n := 0
	for _, r := range m.rotate {
		if r.infer != nil {
			n++
		}
	}
	m.inferRot, m.prefillRot, m.SlidingWindow, m.Driver = nil, nil, 0, DriverPadded
	if n == 0 {
		return nil
	}
	if n != len(m.rotate) {
		return fmt.Errorf("runner: %d of %d chunks have infer_rotate/prefill_rotate functions; every chunk needs them", n, len(m.rotate))
	}
	for _, r := range m.rotate {
		m.inferRot = append(m.inferRot, r.infer)
		m.prefillRot = append(m.prefillRot, r.prefill)
	}
	w := files.SlidingWindow
	if w == 0 {
		if d, ok := states(m.stateFrom)["model_model_kv_cache_local"]; ok && len(d.shape) >= 3 {
			w = int(d.shape[2])
		}
	}
	if w <= 0 {
		return fmt.Errorf("runner: the packages have *_rotate functions but no sliding window is known; add sliding_window to meta.yaml")
	}
	if w > m.ContextLength {
		return fmt.Errorf("runner: sliding_window %d exceeds the context length %d", w, m.ContextLength)
	}
	m.SlidingWindow, m.Driver = w, DriverChatPy
	return nil
}

// HasRotate reports whether the packages have ANEMLL 0.3.5's *_rotate
// functions.
func (m *Model) HasRotate() bool { return m.inferRot != nil }

// inferFuncs returns the decode functions for a token at pos: infer_rotate
// when the packages have it and pos ≥ SlidingWindow (chat.py's
// generate_next_token), else infer.
func (m *Model) inferFuncs(pos int) []*runtime.Function {
	if m.inferRot != nil && pos >= m.SlidingWindow {
		return m.inferRot
	}
	return m.infer
}

// prefillFuncs returns the prefill functions for a batch starting at start:
// prefill_rotate when the packages have it and start ≥ SlidingWindow
// (chat.py's run_prefill), else prefill.
func (m *Model) prefillFuncs(start int) []*runtime.Function {
	if m.prefillRot != nil && start >= m.SlidingWindow {
		return m.prefillRot
	}
	return m.prefill
}

// PrefillChatPy fills the KV cache for ids as ANEMLL 0.3.5's chat.py
// (run_prefill) does: as many full batches of BatchSize as fit, each
// through the prefill functions (prefill_rotate when the batch starts at or
// past SlidingWindow), then the remaining tokens one at a time through the
// decode functions (infer_rotate at or past SlidingWindow). Nothing is
// padded or repeated. Generate then runs the last prompt token again, as
// chat.py does.
func (m *Model) PrefillChatPy(ids []int) error {
	if len(ids) > m.ContextLength {
		return fmt.Errorf("runner: prompt of %d tokens exceeds the context length %d", len(ids), m.ContextLength)
	}
	b := m.BatchSize
	pos := 0
	for ; pos+b <= len(ids); pos += b {
		h, err := m.embedTokens(ids[pos : pos+b])
		if err != nil {
			return err
		}
		positions := make([]int32, b)
		for i := range positions {
			positions[i] = int32(pos + i)
		}
		in := map[string]*runtime.Tensor{
			"position_ids": runtime.NewInt32([]int{b}, positions),
			"causal_mask":  m.maskRows(pos, b),
			"current_pos":  runtime.NewInt32([]int{1}, []int32{int32(pos)}),
		}
		for i, f := range m.prefillFuncs(pos) {
			in["hidden_states"] = h
			out, err := f.Predict(in, m.state)
			if err != nil {
				return fmt.Errorf("runner: prefill chunk %d at position %d: %w", i+1, pos, err)
			}
			h = out["output_hidden_states"]
		}
	}
	for ; pos < len(ids); pos++ {
		if _, err := m.decodeHidden(ids[pos], pos); err != nil {
			return err
		}
	}
	return nil
}
