// Package reference is a plain fp32 forward pass of the Hugging Face causal
// language models this project converts (LLaMA, Mistral, Qwen 2, Qwen 3,
// Gemma 3 text), written directly from the transformers semantics and
// sharing no code with the Core ML graph builder. It is the yardstick that
// converted packages are checked against.
//
// Activations are float32; dot products, RMSNorm statistics and softmax
// accumulate in float64. One per-position decoder-layer routine serves both
// the full-sequence Forward and the cached Session.Step. Options.Fast
// trades the float64 products for fp32 ones through internal/gemm, for
// calibration statistics only; checks of a conversion use the default.
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
	// Lazy keeps no weights in memory between uses: every pass reads each
	// layer's tensors when it reaches the layer, into one reused buffer,
	// the embedding rows of its tokens and the LM head in blocks of rows,
	// so resident memory is about one layer plus activations and the
	// key/value cache. With CheckpointWeights the tensors are decoded from
	// the memory-mapped file block by block and the mapped pages released
	// after each layer; other Weights are asked for whole tensors each
	// time. The numbers are the eager mode's, bit for bit. Forward reads
	// each layer once per call; Session.Step reads every layer at every
	// step (slow, but bounded). New checks every tensor's shape without
	// reading the data.
	Lazy bool
	// Progress, if set, is called by Forward after each decoder layer
	// with the layers done and their count (long passes report with it).
	Progress func(done, total int)
	// Fast makes Forward and Trace multiply by the linear layers' weights
	// in float32 with the shared fp32 kernels (internal/gemm, which the
	// Core ML interpreter uses too) instead of in float64: several times
	// faster, the numbers equal to the default mode's to fp32 rounding but
	// not bit for bit. It is for calibration statistics, never for
	// checking a conversion: the witness is the default mode, which shares
	// no kernel with the interpreter. Session.Step ignores it.
	Fast bool
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
	// residual, when set, sees the residual stream after each add.
	residual func(layer int, x []float32)
}

// names are the tensor names of one checkpoint layout.
type names struct {
	prefix string // "model." (or a multimodal model's language tower)
	head   string // the untied LM head
}

func (n names) embed() string      { return n.prefix + "embed_tokens.weight" }
func (n names) layer(i int) string { return fmt.Sprintf("%slayers.%d.", n.prefix, i) }
func (n names) finalNorm() string  { return n.prefix + "norm.weight" }
func (m *Model) headName() string {
	if m.splitHead {
		return "lm_head.weight" // as SeparateLMHead promises
	}
	return m.names.head
}
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
		if err := m.checkLazy(); err != nil {
			return nil, err
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

// DecoderPrefix returns the prefix of the decoder's tensor names in the
// checkpoint: "model.", or where a multimodal checkpoint keeps its text
// tower ("language_model.model.", "model.language_model."). Observers see
// layer weights under it.
func (m *Model) DecoderPrefix() string { return m.names.prefix }

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
// within a layer each weight's inputs position by position just before the
// weight runs (q, k and v of one position together, then o, then gate and
// up together, then down), then the LM head position by position; Step
// reports one position layer by layer (q, k, v, o, gate, up, down), then
// the LM head. x is only valid during the call and must not be modified. A
// nil fn disables observation. Observe must not be called while the model
// is running.
func (m *Model) Observe(fn func(weight string, x []float32)) { m.observe = fn }

// ObserveResidual installs fn to be called with the residual stream of a
// position after each residual add of layer i (twice per layer: after
// attention and after the MLP; Forward reports every position's first add,
// then every position's second), so a caller can find its peak magnitude
// (fp16 safety). x is only valid during the call; nil disables it. Calls
// happen on the goroutine running Forward or Step; Observe's rules apply.
func (m *Model) ObserveResidual(fn func(layer int, x []float32)) { m.residual = fn }

func (m *Model) seeResidual(li int, x []float32) {
	if m.residual != nil {
		m.residual(li, x)
	}
}

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

// gain reads the norm weight name of length hidden_size and returns the gain
// the family multiplies by (see toGain).
func (m *Model) gain(name string) ([]float32, error) {
	w, err := m.tensor(name, m.hidden)
	if err != nil {
		return nil, err
	}
	return m.toGain(w, false), nil
}

// req is one tensor of a decoder layer: its name and shape, where it goes,
// and whether it is a norm weight (turned into the family's gain).
type req struct {
	name  string
	shape []int
	dst   *[]float32
	gain  bool
}

// layerReqs lists decoder layer i's tensors, filling in L's linear shapes
// and names.
func (m *Model) layerReqs(i int, L *layerWeights) []req {
	p := m.names.layer(i)
	h, q, kv, sp := m.hidden, m.qDim(), m.kvDim(), m.sp
	var rs []req
	norm := func(dst *[]float32, name string, n int) {
		rs = append(rs, req{name: p + name + ".weight", shape: []int{n}, dst: dst, gain: true})
	}
	lin := func(l *linear, name string, out, in int, bias bool) {
		l.out, l.in, l.name = out, in, p+name+".weight"
		rs = append(rs, req{name: l.name, shape: []int{out, in}, dst: &l.w})
		if bias {
			rs = append(rs, req{name: p + name + ".bias", shape: []int{out}, dst: &l.b})
		} else {
			l.b = nil
		}
	}
	norm(&L.attnNorm, "input_layernorm", h)
	lin(&L.q, "self_attn.q_proj", q, h, sp.qkvBias)
	lin(&L.k, "self_attn.k_proj", kv, h, sp.qkvBias)
	lin(&L.v, "self_attn.v_proj", kv, h, sp.qkvBias)
	if sp.qkNorm {
		norm(&L.qNorm, "self_attn.q_norm", m.headDim)
		norm(&L.kNorm, "self_attn.k_norm", m.headDim)
	}
	lin(&L.o, "self_attn.o_proj", h, q, sp.oBias)
	if sp.gemma {
		norm(&L.attnOutNorm, "post_attention_layernorm", h)
		norm(&L.mlpNorm, "pre_feedforward_layernorm", h)
		norm(&L.mlpOutNorm, "post_feedforward_layernorm", h)
	} else {
		norm(&L.mlpNorm, "post_attention_layernorm", h)
	}
	lin(&L.gate, "mlp.gate_proj", m.inter, h, sp.mlpBias)
	lin(&L.up, "mlp.up_proj", m.inter, h, sp.mlpBias)
	lin(&L.down, "mlp.down_proj", h, m.inter, sp.mlpBias)
	return rs
}

// loadLayer reads decoder layer i into new memory.
func (m *Model) loadLayer(i int) (*layerWeights, error) {
	L := &layerWeights{}
	for _, r := range m.layerReqs(i, L) {
		d, err := m.tensor(r.name, r.shape...)
		if err != nil {
			return nil, err
		}
		if r.gain {
			d = m.toGain(d, false)
		}
		*r.dst = d
	}
	return L, nil
}

// toGain turns a norm weight into the gain the family multiplies by: w
// itself, or Gemma's 1 + w computed in float32 (in place when the slice is
// the reference's own, else in a fresh slice: weights are never modified).
func (m *Model) toGain(w []float32, owned bool) []float32 {
	if !m.sp.gemma {
		return w
	}
	g := w
	if !owned {
		g = make([]float32, len(w))
	}
	for i, v := range w {
		g[i] = 1 + v
	}
	return g
}

// Forward runs the whole sequence at once (positions 0..len(ids)-1) and
// returns the logits of every position: row t predicts token t+1. It runs
// layer by layer, each layer position by position through the same routine
// Session.Step uses, so both compute identical numbers.
func (m *Model) Forward(ids []int) ([][]float32, error) { return m.run(ids, true) }

// run is Forward, with the LM head only if logits is set (else nil rows).
func (m *Model) run(ids []int, logits bool) ([][]float32, error) {
	if err := m.checkIDs(ids); err != nil {
		return nil, err
	}
	T := len(ids)
	x := newRows(T, m.hidden)
	if err := m.embedInto(x, ids); err != nil {
		return nil, err
	}
	// All positions go through each layer together (the same numbers as
	// Step, position by position).
	b := m.newBatch(T)
	var buf layerWeights // lazy mode: every layer is read into this memory
	for li := range m.layerCount() {
		L, err := m.layerAt(li, &buf)
		if err != nil {
			return nil, err
		}
		var c kvCache
		m.layerBatch(L, li, &c, x, b)
		if m.opt.Progress != nil {
			m.opt.Progress(li+1, m.layerCount())
		}
	}
	hn := newRows(T, m.hidden)
	for t := range T {
		m.finalNorm(hn[t], x[t])
	}
	if !logits {
		return nil, nil
	}
	out := newRows(T, m.vocab)
	if err := m.head(out, hn); err != nil {
		return nil, err
	}
	return out, nil
}

// Trace runs the whole sequence through every decoder layer and the final
// norm, as Forward does, for the observers (Observe, ObserveResidual),
// without the LM head's logits.
func (m *Model) Trace(ids []int) error {
	_, err := m.run(ids, false)
	return err
}

// layerAt returns decoder layer i's weights; in lazy mode it reads them into
// buf's memory.
func (m *Model) layerAt(i int, buf *layerWeights) (*layerWeights, error) {
	if !m.opt.Lazy {
		return m.layers[i], nil
	}
	return m.loadLayerInto(i, buf)
}

// embedInto sets x[t] to the (scaled) embedding of ids[t].
func (m *Model) embedInto(x [][]float32, ids []int) error {
	h := m.hidden
	if !m.opt.Lazy {
		for t, id := range ids {
			copy(x[t], m.embed[id*h:(id+1)*h])
		}
	} else if err := m.lazyEmbed(x, ids); err != nil {
		return err
	}
	if s := m.sp.embedScale; s != 0 {
		for t := range x {
			for i, v := range x[t] {
				x[t][i] = v * s
			}
		}
	}
	return nil
}

// finalNorm sets hn to the final norm of x: the LM head's input.
func (m *Model) finalNorm(hn, x []float32) {
	rmsNorm(hn, x, m.norm, m.eps)
	if m.observe != nil {
		m.observe("lm_head.weight", hn)
	}
}

// head sets logits[t] to the LM head applied to hn[t], soft-capped when the
// family says so.
func (m *Model) head(logits, hn [][]float32) error {
	if !m.opt.Lazy {
		l := linear{w: m.lmHead, out: m.vocab, in: m.hidden}
		l.applyRows(logits, widenRows(nil, hn))
	} else if err := m.lazyHead(logits, hn); err != nil {
		return err
	}
	if c := m.sp.finalCap; c != 0 {
		for _, row := range logits {
			softcap(row, c)
		}
	}
	return nil
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
