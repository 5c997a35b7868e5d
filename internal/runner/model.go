package runner

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/runtime"
)

// Model is a converted LLM loaded for the CPU interpreter.
type Model struct {
	embed   *runtime.Function
	head    *runtime.Function
	logits  []string // LM head outputs in order (logits1..K)
	infer   []*runtime.Function
	prefill []*runtime.Function
	state   *runtime.State
	// inferRot and prefillRot are ANEMLL 0.3.5's infer_rotate and
	// prefill_rotate functions per chunk (nil for packages without them).
	inferRot, prefillRot []*runtime.Function
	rotate               []rotateFuncs     // as loaded, per chunk
	stateFrom            *runtime.Function // declares every state of every function

	// ContextLength C, StateLength S, BatchSize B, Hidden H.
	ContextLength, StateLength, BatchSize, Hidden int
	// Metadata of the first FFN chunk (com.anemll.* keys).
	Metadata coreml.Metadata
	// SlidingWindow is the position from which the *_rotate functions are
	// used (0 when the packages have none); see Driver.
	SlidingWindow int
	// Driver says how Prefill runs a prompt (DriverChatPy for packages with
	// *_rotate functions, else DriverPadded).
	Driver Driver

	mask []float32 // scratch causal-mask row(s)

	// argmax: the head returns argmax_idx/argmax_val (see mono.go), with
	// the split sizes chunkSizes and the head's metadata headMeta.
	argmax     bool
	chunkSizes []int
	headMeta   headMetadata
	// monoInfer and monoPrefill are a monolithic package's functions.
	monoInfer, monoPrefill *runtime.Function
	low                    *lowMem // set in low-memory mode (see LoadOptions)
}

// openModel reads the package at path and loads its program into the
// interpreter.
func openModel(path string) (*runtime.Model, *coreml.Package, error) {
	pkg, err := coreml.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer pkg.Close()
	m, err := runtime.Load(pkg.Program)
	if err != nil {
		return nil, nil, fmt.Errorf("runner: %s: %w", path, err)
	}
	return m, pkg, nil
}

// loadFunction loads function fn (the default function if empty) of the
// package at path.
func loadFunction(path, fn string) (*runtime.Function, *coreml.Package, error) {
	m, pkg, err := openModel(path)
	if err != nil {
		return nil, nil, err
	}
	if fn == "" {
		fn = pkg.Description.DefaultFunction
		if fn == "" {
			fn = pkg.Program.Functions[0].Name
		}
	}
	f, err := m.Function(fn)
	if err != nil {
		return nil, nil, fmt.Errorf("runner: %s: %w", path, err)
	}
	return f, pkg, nil
}

// loadChunk loads the decode and prefill functions of one chunk, and the
// rotate functions when the chunk has them.
func loadChunk(c ChunkFiles) (infer, prefill *runtime.Function, rot rotateFuncs, meta coreml.Metadata, err error) {
	if c.Combined != "" {
		m, pkg, err := openModel(c.Combined)
		if err != nil {
			return nil, nil, rot, meta, err
		}
		if infer, err = m.Function("infer"); err != nil {
			return nil, nil, rot, meta, fmt.Errorf("runner: %s: %w", c.Combined, err)
		}
		if prefill, err = m.Function("prefill"); err != nil {
			return nil, nil, rot, meta, fmt.Errorf("runner: %s: %w", c.Combined, err)
		}
		if rot, err = combinedRotate(c.Combined, m); err != nil {
			return nil, nil, rot, meta, err
		}
		return infer, prefill, rot, pkg.Description.Metadata, nil
	}
	infer, pkg, err := loadFunction(c.FFN, "")
	if err != nil {
		return nil, nil, rot, meta, err
	}
	if prefill, _, err = loadFunction(c.Prefill, ""); err != nil {
		return nil, nil, rot, meta, err
	}
	if rot, err = separateRotate(c); err != nil {
		return nil, nil, rot, meta, err
	}
	return infer, prefill, rot, pkg.Description.Metadata, nil
}

// dim returns dimension i of a function input, or an error.
func dim(f *runtime.Function, input string, i int) (int, error) {
	for _, in := range f.Inputs() {
		if in.Name == input {
			t := in.Type
			if t.Elem != nil {
				t = *t.Elem
			}
			if i < 0 {
				i += len(t.Shape)
			}
			if i < 0 || i >= len(t.Shape) || t.Shape[i] < 0 {
				break
			}
			return int(t.Shape[i]), nil
		}
	}
	return 0, fmt.Errorf("runner: function %s has no fixed dimension %d of input %q", f.Name(), i, input)
}

// Load reads every package of a converted model and prepares a fresh
// KV-cache state. Sizes come from the packages' declared shapes. It runs
// in low-memory mode (see LoadOptions) when the model would not fit in
// the memory available (see NeedsLowMemory).
func Load(files *Files) (*Model, error) {
	return LoadWith(files, LoadOptions{LowMemory: NeedsLowMemory(files)})
}

// LoadWith is Load with explicit options.
func LoadWith(files *Files, opt LoadOptions) (*Model, error) {
	if files.Monolithic != "" {
		return loadMonolithic(files)
	}
	if len(files.Chunks) == 0 {
		return nil, fmt.Errorf("runner: no FFN chunks")
	}
	m := &Model{}
	var err error
	if m.embed, _, err = loadFunction(files.Embeddings, ""); err != nil {
		return nil, err
	}
	var headPkg *coreml.Package
	if m.head, headPkg, err = loadFunction(files.LMHead, ""); err != nil {
		return nil, err
	}
	m.headMeta = headPkg.Description.Metadata.UserDefined
	low := opt.LowMemory
	for i, c := range files.Chunks {
		if low && i > 0 {
			break // the others are loaded when they run
		}
		inf, pre, rot, meta, err := loadChunk(c)
		if rot.infer != nil {
			// Rotating window caches switch functions by position;
			// chunk-at-a-time loading does not handle them.
			low = false
		}
		if err != nil {
			return nil, err
		}
		if i == 0 {
			m.Metadata = meta
		}
		m.infer = append(m.infer, inf)
		m.prefill = append(m.prefill, pre)
		m.rotate = append(m.rotate, rot)
	}
	if err := m.findHeadOutputs(m.head.Outputs(), files); err != nil {
		return nil, fmt.Errorf("runner: %s: %w", files.LMHead, err)
	}
	if m.ContextLength, err = dim(m.infer[0], "causal_mask", -1); err != nil {
		return nil, err
	}
	if m.BatchSize, err = dim(m.prefill[0], "hidden_states", 1); err != nil {
		return nil, err
	}
	if m.Hidden, err = dim(m.infer[0], "hidden_states", 2); err != nil {
		return nil, err
	}
	if err := m.setupStates(); err != nil {
		return nil, err
	}
	if err := m.setupRotate(files); err != nil {
		return nil, err
	}
	if m.BatchSize > m.ContextLength {
		return nil, fmt.Errorf("runner: batch size %d exceeds context length %d", m.BatchSize, m.ContextLength)
	}
	m.Reset()
	if low {
		m.low = &lowMem{chunks: files.Chunks, infer: m.infer[0], prefill: m.prefill[0]}
		m.infer, m.prefill = nil, nil
	}
	return m, nil
}

// Reset starts a new conversation: a zeroed state holding every state the
// functions declare, made (as ANEMLL's runners do) from the first chunk's
// prefill function when it declares them all (a monolithic model's from
// its prefill function; in low-memory mode the state is zeroed in place).
func (m *Model) Reset() {
	switch {
	case m.monoPrefill != nil:
		m.state = m.monoPrefill.NewState()
	case m.low != nil:
		m.low.zero(m.state)
	default:
		m.state = m.stateFrom.NewState()
	}
}

// sortLogitNames orders logits1..logitsK by their number.
func sortLogitNames(l []string) {
	sort.Slice(l, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimPrefix(l[i], "logits"))
		b, _ := strconv.Atoi(strings.TrimPrefix(l[j], "logits"))
		return a < b
	})
}

// maskRows fills rows [start, start+n) of the C×C causal mask (0 where
// column ≤ row, −Inf elsewhere).
func (m *Model) maskRows(start, n int) *runtime.Tensor {
	c := m.ContextLength
	if cap(m.mask) < n*c {
		m.mask = make([]float32, n*c)
	}
	buf := m.mask[:n*c]
	inf := float32(math.Inf(-1))
	for r := 0; r < n; r++ {
		row := buf[r*c : (r+1)*c]
		for j := range row {
			if j <= start+r {
				row[j] = 0
			} else {
				row[j] = inf
			}
		}
	}
	return runtime.NewFloat16([]int{1, 1, n, c}, buf)
}

func (m *Model) embedTokens(ids []int) (*runtime.Tensor, error) {
	t := make([]int32, len(ids))
	for i, id := range ids {
		t[i] = int32(id)
	}
	out, err := m.embed.Predict(map[string]*runtime.Tensor{"input_ids": runtime.NewInt32([]int{1, len(ids)}, t)}, nil)
	if err != nil {
		return nil, fmt.Errorf("runner: embeddings: %w", err)
	}
	return out["hidden_states"], nil
}

// Prefill runs the prompt ids through the prefill functions in batches of
// BatchSize (zero-padded), filling the KV cache for positions
// 0..len(ids)−1. The last batch is moved back so it ends inside the
// context; tokens it repeats get the same keys and values again.
//
// With Driver DriverChatPy the prompt is split as ANEMLL's chat.py splits
// it instead (see PrefillChatPy).
func (m *Model) Prefill(ids []int) error {
	if len(ids) > m.ContextLength {
		return fmt.Errorf("runner: prompt of %d tokens exceeds the context length %d", len(ids), m.ContextLength)
	}
	if m.low != nil {
		return m.prefillLow(ids)
	}
	if m.Driver == DriverChatPy {
		return m.PrefillChatPy(ids)
	}
	b := m.BatchSize
	for pos := 0; pos < len(ids); pos += b {
		start := min(pos, m.ContextLength-b)
		batch := make([]int, b)
		copy(batch, ids[start:min(start+b, len(ids))])
		if m.monoPrefill != nil {
			if err := m.prefillBatch(batch, start); err != nil {
				return err
			}
			continue
		}
		h, err := m.embedTokens(batch)
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
		for i, f := range m.prefill {
			in["hidden_states"] = h
			out, err := f.Predict(in, m.state)
			if err != nil {
				return fmt.Errorf("runner: prefill chunk %d: %w", i+1, err)
			}
			h = out["output_hidden_states"]
		}
	}
	return nil
}

// Decode runs token id at position pos through the decode functions and
// the LM head, updating the KV cache, and returns the logits predicting
// position pos+1. Packages with infer_rotate functions use them from
// position SlidingWindow on, as ANEMLL's chat.py does. Models with an
// in-model argmax head return ErrNoLogits (use Greedy).
func (m *Model) Decode(id, pos int) ([]float32, error) {
	if m.argmax {
		return nil, ErrNoLogits
	}
	out, err := m.step(id, pos)
	if err != nil {
		return nil, err
	}
	return m.joinLogits(out), nil
}

// decodeHidden runs token id at position pos through the decode functions
// (infer, or infer_rotate past the window) and returns the last chunk's
// hidden state.
func (m *Model) decodeHidden(id, pos int) (*runtime.Tensor, error) {
	h, err := m.embedTokens([]int{id})
	if err != nil {
		return nil, err
	}
	p := runtime.NewInt32([]int{1}, []int32{int32(pos)})
	in := map[string]*runtime.Tensor{"position_ids": p, "current_pos": p, "causal_mask": m.maskRows(pos, 1)}
	for i := range m.numChunks() {
		f, err := m.chunkInfer(i, pos)
		if err != nil {
			return nil, err
		}
		in["hidden_states"] = h
		out, err := f.Predict(in, m.state)
		if err != nil {
			return nil, fmt.Errorf("runner: FFN chunk %d: %w", i+1, err)
		}
		h = out["output_hidden_states"]
	}
	return h, nil
}

// Logits runs the LM head on a [1,1,H] hidden state and joins the logits
// splits along the vocabulary.
func (m *Model) Logits(h *runtime.Tensor) ([]float32, error) {
	if m.argmax {
		return nil, ErrNoLogits
	}
	if m.head == nil {
		return nil, fmt.Errorf("runner: a monolithic model has no separate LM head")
	}
	out, err := m.head.Predict(map[string]*runtime.Tensor{"hidden_states": h}, nil)
	if err != nil {
		return nil, fmt.Errorf("runner: LM head: %w", err)
	}
	return m.joinLogits(out), nil
}

// Snapshot copies the KV-cache state (stored as the model stores it: fp16
// states as half bits).
func (m *Model) Snapshot() *runtime.State { return m.state.Clone() }

// Restore puts back a state copied by Snapshot of this model. It panics on
// a snapshot of a model with other states (a programmer error).
func (m *Model) Restore(snap *runtime.State) {
	if err := m.state.CopyFrom(snap); err != nil {
		panic(err)
	}
}
