package runner

import (
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/runtime"
)

// Function roles as counted by the test functions: each FFN function adds
// one to its slot of the "calls" state.
const (
	slotInfer = iota
	slotInferRotate
	slotPrefill
	slotPrefillRotate
)

const testContext = 32

// testFFN builds an FFN-shaped function over L tokens that passes
// hidden_states through and counts its calls in slot of the "calls" state;
// it also declares the extra states (name → shape).
func testFFN(t *testing.T, name string, L, slot int, extra map[string][]int64) *runtime.Function {
	t.Helper()
	b := mil.NewBuilder(name, mil.OpsetIOS18)
	h := b.Input("hidden_states", mil.TensorType(mil.Float16, 1, int64(L), 1))
	b.Input("position_ids", mil.TensorType(mil.Int32, int64(L)))
	b.Input("causal_mask", mil.TensorType(mil.Float16, 1, 1, int64(L), testContext))
	b.Input("current_pos", mil.TensorType(mil.Int32, 1))
	calls := b.Input("calls", mil.StateType(mil.TensorType(mil.Float16, 1, 1, 4, 1)))
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		b.Input(n, mil.StateType(mil.TensorType(mil.Float16, extra[n]...)))
	}
	one := make([]float32, 4)
	one[slot] = 1
	r := b.Op("read_state", "r", mil.In{"input": calls})
	u := b.Op("add", "u", mil.In{"x": r, "y": b.Const("one", mil.FP16FromFloat32([]int64{1, 1, 4, 1}, one))})
	b.OpN("write_state", "w", mil.In{"input": calls, "data": u})
	out := b.Op("identity", "output_hidden_states", mil.In{"x": h})
	b.Output(out)
	return loadTestFunction(t, b)
}

func loadTestFunction(t *testing.T, b *mil.Builder) *runtime.Function {
	t.Helper()
	fn, err := b.Function()
	if err != nil {
		t.Fatal(err)
	}
	p := mil.NewProgram()
	p.Functions = append(p.Functions, fn)
	m, err := runtime.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.Function(fn.Name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// testEmbed maps input_ids [1,L] to hidden_states [1,L,1] (the id as fp16).
func testEmbed(t *testing.T) *runtime.Function {
	t.Helper()
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	ids := b.Input("input_ids", mil.TensorType(mil.Int32, 1, mil.Unknown))
	c := b.Op("cast", "c", mil.In{"x": ids, "dtype": "fp16"})
	b.Output(b.Op("expand_dims", "hidden_states", mil.In{"x": c, "axes": []int{-1}}))
	return loadTestFunction(t, b)
}

// testModel assembles a two-chunk model from test functions (with rotate
// functions if rotate) and sets it up as Load does.
func testModel(t *testing.T, rotate bool, files *Files, extra map[string][]int64) (*Model, error) {
	t.Helper()
	m := &Model{embed: testEmbed(t), ContextLength: testContext, BatchSize: 8, Hidden: 1}
	for range 2 {
		m.infer = append(m.infer, testFFN(t, "infer", 1, slotInfer, extra))
		m.prefill = append(m.prefill, testFFN(t, "prefill", 8, slotPrefill, extra))
		var r rotateFuncs
		if rotate {
			r = rotateFuncs{testFFN(t, "infer_rotate", 1, slotInferRotate, extra), testFFN(t, "prefill_rotate", 8, slotPrefillRotate, extra)}
		}
		m.rotate = append(m.rotate, r)
	}
	if err := m.setupStates(); err != nil {
		return nil, err
	}
	if err := m.setupRotate(files); err != nil {
		return nil, err
	}
	m.Reset()
	return m, nil
}

// calls returns the call counts per role, summed over both chunks.
func (m *Model) calls() [4]int {
	var c [4]int
	for i, v := range m.state.Tensor("calls").F {
		c[i] = int(v)
	}
	return c
}

// TestPrefillChatPySelection checks which functions chat.py's split runs
// for prompts around the batch size and the window: full batches through
// prefill (prefill_rotate from a batch start ≥ W), the rest token by token
// through infer (infer_rotate from position W). Counts are per role, two
// chunks each.
func TestPrefillChatPySelection(t *testing.T) {
	local := map[string][]int64{"model_model_kv_cache_local": {2, 1, 8, 4}, "model_model_kv_cache_global": {2, 1, testContext, 4}}
	tests := []struct {
		window, prompt int
		// infer, infer_rotate, prefill, prefill_rotate calls per chunk
		want [4]int
	}{
		{8, 7, [4]int{7, 0, 0, 0}},
		{8, 8, [4]int{0, 0, 1, 0}},
		{8, 12, [4]int{0, 4, 1, 0}},
		{8, 21, [4]int{0, 5, 1, 1}},
		{8, 24, [4]int{0, 0, 1, 2}},
		{10, 12, [4]int{2, 2, 1, 0}},
		{10, 21, [4]int{0, 5, 2, 0}},
		{16, 24, [4]int{0, 0, 2, 1}},
	}
	for _, tc := range tests {
		m, err := testModel(t, true, &Files{SlidingWindow: tc.window}, local)
		if err != nil {
			t.Fatal(err)
		}
		if m.Driver != DriverChatPy || m.SlidingWindow != tc.window || m.StateLength != testContext {
			t.Fatalf("driver %v window %d state length %d", m.Driver, m.SlidingWindow, m.StateLength)
		}
		if err := m.Prefill(make([]int, tc.prompt)); err != nil {
			t.Fatal(err)
		}
		want := tc.want
		for i := range want {
			want[i] *= 2
		}
		if got := m.calls(); got != want {
			t.Errorf("window %d, prompt %d: calls (infer, infer_rotate, prefill, prefill_rotate) %v, want %v", tc.window, tc.prompt, got, want)
		}
		// Decode at W−1 uses infer, at W infer_rotate.
		m.Reset()
		for _, pos := range []int{tc.window - 1, tc.window} {
			if _, err := m.decodeHidden(1, pos); err != nil {
				t.Fatal(err)
			}
		}
		if got := m.calls(); got != [4]int{2, 2, 0, 0} {
			t.Errorf("window %d: decode at %d and %d made calls %v, want [2 2 0 0]", tc.window, tc.window-1, tc.window, got)
		}
	}
	// Without meta.yaml's sliding_window the window is the local cache's length.
	m, err := testModel(t, true, &Files{}, local)
	if err != nil || m.SlidingWindow != 8 {
		t.Errorf("window from the local cache: %v, %v", m, err)
	}
}

// TestPaddedDriverUnchanged checks that packages without rotate functions
// keep the padded driver: a 12-token prompt is two prefill batches (the
// second moved back), no infer call, whatever sliding_window says.
func TestPaddedDriverUnchanged(t *testing.T) {
	m, err := testModel(t, false, &Files{SlidingWindow: 8}, map[string][]int64{"model_model_kv_cache_0": {2, 1, testContext, 4}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Driver != DriverPadded || m.SlidingWindow != 0 || m.HasRotate() || m.StateLength != testContext {
		t.Fatalf("driver %v window %d rotate %v state length %d", m.Driver, m.SlidingWindow, m.HasRotate(), m.StateLength)
	}
	if err := m.Prefill(make([]int, 12)); err != nil {
		t.Fatal(err)
	}
	if got := m.calls(); got != [4]int{0, 0, 4, 0} {
		t.Errorf("calls %v, want [0 0 4 0]", got)
	}
	// Asked for, chat.py's split also drives them: one batch, four tokens.
	m.Driver = DriverChatPy
	m.Reset()
	if err := m.Prefill(make([]int, 12)); err != nil {
		t.Fatal(err)
	}
	if got := m.calls(); got != [4]int{8, 0, 2, 0} {
		t.Errorf("chat.py split: calls %v, want [8 0 2 0]", got)
	}
}

// TestStatesAndRotateErrors covers the state union and the rotate checks.
func TestStatesAndRotateErrors(t *testing.T) {
	// The state set comes from a function declaring all states; here the
	// second chunk's functions declare one more than the first's.
	m := &Model{ContextLength: testContext, BatchSize: 8}
	m.infer = []*runtime.Function{testFFN(t, "infer", 1, 0, nil), testFFN(t, "infer", 1, 0, map[string][]int64{"model_model_kv_cache_global": {2, 1, 24, 4}})}
	m.prefill = []*runtime.Function{testFFN(t, "prefill", 8, 2, nil), testFFN(t, "prefill", 8, 2, map[string][]int64{"model_model_kv_cache_global": {2, 1, 24, 4}})}
	m.rotate = make([]rotateFuncs, 2)
	if err := m.setupStates(); err != nil {
		t.Fatal(err)
	}
	if m.stateFrom != m.prefill[1] || m.StateLength != 24 {
		t.Errorf("state from %s, length %d; want chunk 2's prefill, 24", m.stateFrom.Name(), m.StateLength)
	}
	m.Reset()
	if got := m.state.Names(); !slices.Equal(got, []string{"calls", "model_model_kv_cache_global"}) {
		t.Errorf("states %v", got)
	}
	// No function declares both a and b.
	m.infer[0] = testFFN(t, "infer", 1, 0, map[string][]int64{"a": {1, 1, 4, 1}})
	if err := m.setupStates(); err == nil || !strings.Contains(err.Error(), "no FFN function declares all the states") {
		t.Errorf("no superset: %v", err)
	}
	// Two shapes for one state name.
	m.infer[0] = testFFN(t, "infer", 1, 0, map[string][]int64{"model_model_kv_cache_global": {2, 1, 32, 4}})
	if err := m.setupStates(); err == nil || !strings.Contains(err.Error(), `state "model_model_kv_cache_global"`) || !strings.Contains(err.Error(), "chunk 1 infer") {
		t.Errorf("conflict: %v", err)
	}

	local := map[string][]int64{"model_model_kv_cache_local": {2, 1, 8, 4}}
	if _, err := testModel(t, true, &Files{SlidingWindow: testContext + 1}, local); err == nil || !strings.Contains(err.Error(), "exceeds the context length") {
		t.Errorf("window past the context: %v", err)
	}
	if _, err := testModel(t, true, &Files{}, map[string][]int64{"model_model_kv_cache_global": {2, 1, testContext, 4}}); err == nil || !strings.Contains(err.Error(), "add sliding_window to meta.yaml") {
		t.Errorf("unknown window: %v", err)
	}
	m, err := testModel(t, true, &Files{SlidingWindow: 8}, local)
	if err != nil {
		t.Fatal(err)
	}
	m.rotate[1] = rotateFuncs{}
	if err := m.setupRotate(&Files{SlidingWindow: 8}); err == nil || !strings.Contains(err.Error(), "1 of 2 chunks") {
		t.Errorf("rotate in one chunk only: %v", err)
	}
}
