// Package reference is a plain fp32 forward pass of the Hugging Face causal
// language models this project converts (LLaMA, Mistral, Qwen 2, Qwen 3,
// Gemma 3 text), written directly from the transformers semantics and
// sharing no code with the Core ML graph builder. It is the yardstick that
// converted packages are checked against.
//
// Activations are float32; dot products, RMSNorm statistics and softmax
// accumulate in float64. One per-position decoder-layer routine serves both
// the full-sequence Forward and the cached Session.Step.
package reference

import (
	"fmt"
	"strings"

	"github.com/anemll/anemll/internal/hf"
)

// Weights supplies float32 tensors by Hugging Face name
// ("model.layers.0.self_attn.q_proj.weight", ...), with their shapes.
//
// Two optional methods refine how the reference reads them:
//
//   - Has(name string) bool reports whether a tensor exists without reading
//     it (used to find a multimodal checkpoint's weight-name layout);
//     without it the reference probes with Tensor.
//   - SeparateLMHead() bool, when it returns true, makes the reference read
//     the LM head from Tensor("lm_head.weight") even for a model with tied
//     embeddings (for example an LM head quantized separately in a package).
type Weights interface {
	Tensor(name string) (data []float32, shape []int64, err error)
}

// hasser and separateHead are the optional capabilities of Weights.
type (
	hasser       interface{ Has(name string) bool }
	separateHead interface{ SeparateLMHead() bool }
)

// CheckpointWeights adapts an open safetensors checkpoint to Weights (with
// Has).
func CheckpointWeights(c *hf.Checkpoint) Weights { return ckWeights{c} }

type ckWeights struct{ c *hf.Checkpoint }

func (w ckWeights) Tensor(name string) ([]float32, []int64, error) {
	info, ok := w.c.Info(name)
	if !ok {
		return nil, nil, fmt.Errorf("reference: tensor %q not in checkpoint %s", name, w.c.Dir)
	}
	d, err := w.c.Float32(name)
	if err != nil {
		return nil, nil, fmt.Errorf("reference: %w", err)
	}
	return d, info.Shape, nil
}

// Has reports whether the checkpoint holds the named tensor.
func (w ckWeights) Has(name string) bool {
	_, ok := w.c.Info(name)
	return ok
}

// Options refine New.
type Options struct {
	// Lazy keeps no layer weights in memory between uses: every pass reads
	// each layer's tensors from Weights when it reaches the layer and
	// releases them after, so resident memory is about one layer plus
	// activations and the key/value cache. The numbers are the same as the
	// eager mode's, bit for bit. Forward reads each layer once per call;
	// Session.Step reads every layer at every step (slow, but bounded).
	Lazy bool
}

// Model is a decoder-only language model ready to run.
type Model struct {
	cfg                           *hf.Config
	sp                            *spec
	hidden, inter, heads, kvHeads int
	headDim, vocab                int
	eps                           float64

	w         Weights
	opt       Options
	names     names
	splitHead bool // the LM head is read from lm_head.weight

	embed, norm, lmHead []float32       // embed and lmHead nil when lazy
	layers              []*layerWeights // nil when lazy

	observe func(weight string, x []float32)
}

// names are the tensor names of one checkpoint layout.
type names struct {
	prefix string // "model." (or a multimodal model's language tower)
	head   string // the untied LM head
}

func (n names) embed() string      { return n.prefix + "embed_tokens.weight" }
func (n names) layer(i int) string { return fmt.Sprintf("%slayers.%d.", n.prefix, i) }
func (n names) finalNorm() string  { return n.prefix + "norm.weight" }
func (m *Model) headName() string  { return m.names.head }
func (m *Model) tiedHead() bool    { return m.cfg.TieWordEmbeddings && !m.splitHead }
func (m *Model) embedShape() []int { return []int{m.vocab, m.hidden} }
func (m *Model) qDim() int         { return m.heads * m.headDim }
func (m *Model) kvDim() int        { return m.kvHeads * m.headDim }
func (m *Model) layerCount() int   { return len(m.sp.layers) }

// layerWeights are one decoder layer's tensors, gains already in the form
// the layer multiplies by.
type layerWeights struct {
	// attnNorm precedes attention; attnOutNorm (Gemma) follows it.
	attnNorm, attnOutNorm []float32
	// mlpNorm precedes the MLP (LLaMA's post_attention_layernorm, Gemma's
	// pre_feedforward_layernorm); mlpOutNorm (Gemma) follows it.
	mlpNorm, mlpOutNorm []float32
	qNorm, kNorm        []float32 // per head over head_dim, or nil
	q, k, v, o          linear
	gate, up, down      linear
}

// linear is y = W·x (+ b) with W stored [out, in] as in nn.Linear.
type linear struct {
	w, b    []float32
	out, in int
	name    string // HF weight name, for Observe
}

// New checks cfg, picks its family and loads every weight the model needs
// from w.
func New(cfg *hf.Config, w Weights) (*Model, error) { return NewWithOptions(cfg, w, Options{}) }

// NewWithOptions is New with options.
func NewWithOptions(cfg *hf.Config, w Weights, opt Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	sp, err := resolveFamily(cfg)
	if err != nil {
		return nil, err
	}
	m := &Model{
		cfg: cfg, sp: sp, hidden: cfg.HiddenSize, inter: cfg.IntermediateSize, heads: cfg.NumAttentionHeads,
		kvHeads: cfg.NumKeyValueHeads, headDim: cfg.HeadDim, vocab: cfg.VocabSize, eps: cfg.RMSNormEps,
		w: w, opt: opt, names: names{prefix: "model.", head: "lm_head.weight"},
	}
	if sh, ok := w.(separateHead); ok && sh.SeparateLMHead() {
		m.splitHead = true
	}
	if sp.nested {
		if m.names, err = m.findLayout(); err != nil {
			return nil, err
		}
	}
	if m.norm, err = m.gain(m.names.finalNorm()); err != nil {
		return nil, err
	}
	if opt.Lazy {
		// Check every tensor once (shapes and presence), then let go.
		for i := range m.layerCount() {
			if _, err := m.loadLayer(i); err != nil {
				return nil, err
			}
		}
		if _, err := m.tensor(m.names.embed(), m.embedShape()...); err != nil {
			return nil, err
		}
		if !m.tiedHead() {
			if _, err := m.tensor(m.headName(), m.embedShape()...); err != nil {
				return nil, err
			}
		}
		return m, nil
	}
	if m.embed, err = m.tensor(m.names.embed(), m.embedShape()...); err != nil {
		return nil, err
	}
	for i := range m.layerCount() {
		L, err := m.loadLayer(i)
		if err != nil {
			return nil, err
		}
		m.layers = append(m.layers, L)
	}
	if m.tiedHead() {
		m.lmHead = m.embed
	} else if m.lmHead, err = m.tensor(m.headName(), m.embedShape()...); err != nil {
		return nil, err
	}
	return m, nil
}

// Gemma 3 multimodal checkpoints keep the text tower under one of two
// prefixes, depending on the transformers version that saved them.
var nestedLayouts = []names{
	{prefix: "model.language_model.", head: "lm_head.weight"},
	{prefix: "language_model.model.", head: "language_model.lm_head.weight"},
}

// findLayout returns the nested layout whose embedding table w holds.
func (m *Model) findLayout() (names, error) {
	var tried []string
	for _, n := range nestedLayouts {
		tried = append(tried, n.embed())
		if h, ok := m.w.(hasser); ok {
			if h.Has(n.embed()) {
				return n, nil
			}
			continue
		}
		if _, _, err := m.w.Tensor(n.embed()); err == nil {
			return n, nil
		}
	}
	return names{}, fmt.Errorf("reference: %s: no text-tower embedding table (looked for %q and %q)",
		m.cfg.ModelType, tried[0], tried[1])
}

// Config returns the model's configuration.
func (m *Model) Config() *hf.Config { return m.cfg }

// Family returns the model_type whose semantics the model follows.
func (m *Model) Family() string { return m.sp.family }

// Observe installs fn to be called with the input row of every linear layer
// just before the layer is applied, keyed by the Hugging Face name of that
// layer's weight in the checkpoint ("model.layers.3.self_attn.q_proj.weight",
// ...; always "lm_head.weight" for the LM head's input, the final-norm
// output, tied or not). Calls happen on the goroutine that runs Forward or
// Session.Step, in a deterministic order: Forward reports layer by layer,
// each layer position by position (q, k, v, o, gate, up, down), then the LM
// head position by position; Step reports one position layer by layer, then
// the LM head. x is only valid during the call and must not be modified. A
// nil fn disables observation. Observe must not be called while the model
// is running.
func (m *Model) Observe(fn func(weight string, x []float32)) { m.observe = fn }

// see reports x as the input of the linear layer l.
func (m *Model) see(l *linear, x []float32) {
	if m.observe != nil {
		m.observe(l.name, x)
	}
}

// tensor reads name from the weights and checks its shape.
func (m *Model) tensor(name string, shape ...int) ([]float32, error) {
	d, s, err := m.w.Tensor(name)
	if err != nil {
		if strings.HasPrefix(err.Error(), "reference: ") {
			return nil, err
		}
		return nil, fmt.Errorf("reference: %w", err)
	}
	ok := len(s) == len(shape)
	n := 1
	for i := range shape {
		ok = ok && s[i] == int64(shape[i])
		n *= shape[i]
	}
	if !ok || len(d) != n {
		return nil, fmt.Errorf("reference: tensor %q has shape %v (%d values), want %v", name, s, len(d), shape)
	}
	return d, nil
}

// gain reads a norm weight of length n (hidden size by default) and returns
// the gain the family multiplies by: w itself, or Gemma's 1 + w computed in
// float32 (a fresh slice: the weights are never modified).
func (m *Model) gain(name string, n ...int) ([]float32, error) {
	size := m.hidden
	if len(n) > 0 {
		size = n[0]
	}
	w, err := m.tensor(name, size)
	if err != nil {
		return nil, err
	}
	if !m.sp.gemma {
		return w, nil
	}
	g := make([]float32, len(w))
	for i, v := range w {
		g[i] = 1 + v
	}
	return g, nil
}

// loadLayer reads decoder layer i.
func (m *Model) loadLayer(i int) (*layerWeights, error) {
	p := m.names.layer(i)
	h, q, kv, sp := m.hidden, m.qDim(), m.kvDim(), m.sp
	var first error // the first missing or misshapen tensor
	get := func(name string, shape ...int) []float32 {
		if first != nil {
			return nil
		}
		d, err := m.tensor(name, shape...)
		first = err
		return d
	}
	norm := func(name string, n ...int) []float32 {
		if first != nil {
			return nil
		}
		g, err := m.gain(name, n...)
		first = err
		return g
	}
	lin := func(name string, out, in int, bias bool) linear {
		l := linear{w: get(p+name+".weight", out, in), out: out, in: in, name: p + name + ".weight"}
		if bias {
			l.b = get(p+name+".bias", out)
		}
		return l
	}
	L := &layerWeights{
		attnNorm: norm(p + "input_layernorm.weight"),
		q:        lin("self_attn.q_proj", q, h, sp.qkvBias),
		k:        lin("self_attn.k_proj", kv, h, sp.qkvBias),
		v:        lin("self_attn.v_proj", kv, h, sp.qkvBias),
		o:        lin("self_attn.o_proj", h, q, sp.oBias),
		gate:     lin("mlp.gate_proj", m.inter, h, sp.mlpBias),
		up:       lin("mlp.up_proj", m.inter, h, sp.mlpBias),
		down:     lin("mlp.down_proj", h, m.inter, sp.mlpBias),
	}
	if sp.gemma {
		L.attnOutNorm = norm(p + "post_attention_layernorm.weight")
		L.mlpNorm = norm(p + "pre_feedforward_layernorm.weight")
		L.mlpOutNorm = norm(p + "post_feedforward_layernorm.weight")
	} else {
		L.mlpNorm = norm(p + "post_attention_layernorm.weight")
	}
	if sp.qkNorm {
		L.qNorm = norm(p+"self_attn.q_norm.weight", m.headDim)
		L.kNorm = norm(p+"self_attn.k_norm.weight", m.headDim)
	}
	if first != nil {
		return nil, first
	}
	return L, nil
}

// layerAt returns decoder layer i's weights, reading them in lazy mode.
func (m *Model) layerAt(i int) (*layerWeights, error) {
	if m.layers != nil {
		return m.layers[i], nil
	}
	return m.loadLayer(i)
}

// embedTable and headTable return the embedding and LM-head matrices,
// reading them in lazy mode.
func (m *Model) embedTable() ([]float32, error) {
	if m.embed != nil {
		return m.embed, nil
	}
	return m.tensor(m.names.embed(), m.embedShape()...)
}

func (m *Model) headTable() ([]float32, error) {
	if m.lmHead != nil {
		return m.lmHead, nil
	}
	if m.tiedHead() {
		return m.embedTable()
	}
	return m.tensor(m.headName(), m.embedShape()...)
}

// Forward runs the whole sequence at once (positions 0..len(ids)-1) and
// returns the logits of every position: row t predicts token t+1. It runs
// layer by layer, each layer position by position through the same routine
// Session.Step uses, so both compute identical numbers.
func (m *Model) Forward(ids []int) ([][]float32, error) {
	if err := m.checkIDs(ids); err != nil {
		return nil, err
	}
	T := len(ids)
	x := newRows(T, m.hidden)
	if err := m.embedInto(x, ids); err != nil {
		return nil, err
	}
	wk := m.newWork()
	for li := range m.layerCount() {
		L, err := m.layerAt(li)
		if err != nil {
			return nil, err
		}
		var c kvCache
		for t := range T {
			m.layer(L, li, &c, t, x[t], wk)
		}
	}
	head, err := m.headTable()
	if err != nil {
		return nil, err
	}
	logits := newRows(T, m.vocab)
	for t := range T {
		m.final(logits[t], x[t], head, wk)
	}
	return logits, nil
}

// embedInto sets x[t] to the (scaled) embedding of ids[t].
func (m *Model) embedInto(x [][]float32, ids []int) error {
	emb, err := m.embedTable()
	if err != nil {
		return err
	}
	h := m.hidden
	for t, id := range ids {
		copy(x[t], emb[id*h:(id+1)*h])
		if s := m.sp.embedScale; s != 0 {
			for i, v := range x[t] {
				x[t][i] = v * s
			}
		}
	}
	return nil
}

// final sets logits to the LM head applied to the final norm of x, soft-capped
// when the family says so.
func (m *Model) final(logits, x, head []float32, wk *work) {
	rmsNorm(wk.hn, x, m.norm, m.eps)
	l := linear{w: head, out: m.vocab, in: m.hidden, name: "lm_head.weight"}
	m.see(&l, wk.hn)
	l.apply(logits, wk.hn)
	if c := m.sp.finalCap; c != 0 {
		softcap(logits, c)
	}
}

func (m *Model) checkIDs(ids []int) error {
	for i, id := range ids {
		if id < 0 || id >= m.vocab {
			return fmt.Errorf("reference: token %d at position %d is outside the vocabulary [0, %d)", id, i, m.vocab)
		}
	}
	return nil
}

func newRows(n, w int) [][]float32 {
	buf := make([]float32, n*w)
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = buf[i*w : (i+1)*w : (i+1)*w]
	}
	return rows
}
