// Package reference is a plain fp32 forward pass of Hugging Face's
// LlamaForCausalLM, written directly from the transformers semantics and
// sharing no code with the Core ML graph builder. It is the yardstick that
// converted packages are checked against.
//
// Activations are float32; dot products, RMSNorm statistics and softmax
// accumulate in float64.
package reference

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/anemll/anemll/internal/hf"
)

// Weights supplies float32 tensors by Hugging Face name
// ("model.layers.0.self_attn.q_proj.weight", ...), with their shapes.
type Weights interface {
	Tensor(name string) (data []float32, shape []int64, err error)
}

// CheckpointWeights adapts an open safetensors checkpoint to Weights.
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

// Model holds a LLaMA's weights as float32.
type Model struct {
	cfg                           *hf.Config
	hidden, inter, heads, kvHeads int
	headDim, vocab                int
	eps                           float64
	embed, norm, lmHead           []float32
	layers                        []layer
	invFreq                       []float64 // per rotary pair, scaling applied
	observe                       func(weight string, x []float32)
}

// Observe installs fn to be called with the input row of every linear layer
// just before the layer is applied, keyed by the Hugging Face name of that
// layer's weight ("model.layers.3.self_attn.q_proj.weight", ...;
// "lm_head.weight" for the LM head's input, the final-norm output, tied or
// not). Calls happen on the calling goroutine of Forward or Session.Step, in
// a deterministic order. x is only valid during the call and must not be
// modified. A nil fn disables observation.
func (m *Model) Observe(fn func(weight string, x []float32)) { m.observe = fn }

// see reports x as the input of the linear layer l.
func (m *Model) see(l linear, x []float32) {
	if m.observe != nil {
		m.observe(l.name, x)
	}
}

type layer struct {
	inNorm, postNorm []float32
	q, k, v, o       linear
	gate, up, down   linear
}

// linear is y = W·x (+ b) with W stored [out, in] as in nn.Linear.
type linear struct {
	w, b    []float32
	out, in int
	name    string // HF weight name, for Observe
}

// New checks cfg and loads every weight the model needs from w.
func New(cfg *hf.Config, w Weights) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	if cfg.ModelType != "llama" {
		return nil, fmt.Errorf("reference: model_type %q: %w", cfg.ModelType, hf.ErrUnsupported)
	}
	if cfg.HiddenAct != "" && cfg.HiddenAct != "silu" {
		return nil, fmt.Errorf("reference: hidden_act %q: %w", cfg.HiddenAct, hf.ErrUnsupported)
	}
	m := &Model{
		cfg: cfg, hidden: cfg.HiddenSize, inter: cfg.IntermediateSize, heads: cfg.NumAttentionHeads,
		kvHeads: cfg.NumKeyValueHeads, headDim: cfg.HeadDim, vocab: cfg.VocabSize, eps: cfg.RMSNormEps,
	}
	var err error
	get := func(name string, shape ...int) []float32 {
		if err != nil {
			return nil
		}
		var d []float32
		var s []int64
		d, s, err = w.Tensor(name)
		if err != nil {
			err = fmt.Errorf("reference: %w", err)
			return nil
		}
		ok := len(s) == len(shape)
		n := 1
		for i := range shape {
			ok = ok && s[i] == int64(shape[i])
			n *= shape[i]
		}
		if !ok || len(d) != n {
			err = fmt.Errorf("reference: tensor %q has shape %v (%d values), want %v", name, s, len(d), shape)
			return nil
		}
		return d
	}
	lin := func(prefix string, out, in int, bias bool) linear {
		l := linear{w: get(prefix+".weight", out, in), out: out, in: in, name: prefix + ".weight"}
		if bias {
			l.b = get(prefix+".bias", out)
		}
		return l
	}
	h, q, kv := m.hidden, m.heads*m.headDim, m.kvHeads*m.headDim
	m.embed = get("model.embed_tokens.weight", m.vocab, h)
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		ab, mb := cfg.AttentionBias, cfg.MLPBias
		m.layers = append(m.layers, layer{
			inNorm:   get(p+"input_layernorm.weight", h),
			postNorm: get(p+"post_attention_layernorm.weight", h),
			q:        lin(p+"self_attn.q_proj", q, h, ab),
			k:        lin(p+"self_attn.k_proj", kv, h, ab),
			v:        lin(p+"self_attn.v_proj", kv, h, ab),
			o:        lin(p+"self_attn.o_proj", h, q, ab),
			gate:     lin(p+"mlp.gate_proj", m.inter, h, mb),
			up:       lin(p+"mlp.up_proj", m.inter, h, mb),
			down:     lin(p+"mlp.down_proj", h, m.inter, mb),
		})
	}
	m.norm = get("model.norm.weight", h)
	if cfg.TieWordEmbeddings {
		m.lmHead = m.embed
	} else {
		m.lmHead = get("lm_head.weight", m.vocab, h)
	}
	if err != nil {
		return nil, err
	}
	m.invFreq = InvFreq(cfg)
	return m, nil
}

// Config returns the model's configuration.
func (m *Model) Config() *hf.Config { return m.cfg }

// InvFreq returns the rotary inverse frequencies 1/theta^(2i/head_dim), i <
// head_dim/2, after rope_scaling: "linear" divides them by the factor (the
// same as dividing positions), "llama3" applies transformers'
// _compute_llama3_parameters rule.
func InvFreq(cfg *hf.Config) []float64 {
	d := cfg.HeadDim
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(cfg.RopeTheta, float64(2*i)/float64(d))
	}
	rs := cfg.RopeScaling
	if rs == nil {
		return inv
	}
	switch rs.RopeType {
	case "linear":
		for i := range inv {
			inv[i] /= rs.Factor
		}
	case "llama3":
		orig := float64(rs.OriginalMaxPositionEmbeddings)
		lowWavelen := orig / rs.LowFreqFactor
		highWavelen := orig / rs.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen > lowWavelen:
				inv[i] = f / rs.Factor
			case wavelen < highWavelen:
				// high frequency: unchanged
			default:
				smooth := (orig/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				inv[i] = (1-smooth)*f/rs.Factor + smooth*f
			}
		}
	}
	return inv
}

// Forward runs the whole sequence at once (positions 0..len(ids)-1, causal
// mask) and returns the logits of every position: row t predicts token t+1.
func (m *Model) Forward(ids []int) ([][]float32, error) {
	if err := m.checkIDs(ids); err != nil {
		return nil, err
	}
	T := len(ids)
	h, qd, kvd := m.hidden, m.heads*m.headDim, m.kvHeads*m.headDim
	x := make([][]float32, T)
	for t, id := range ids {
		x[t] = append([]float32(nil), m.embed[id*h:(id+1)*h]...)
	}
	hn := newRows(T, h)
	q, k, v := newRows(T, qd), newRows(T, kvd), newRows(T, kvd)
	attn, proj := newRows(T, qd), newRows(T, h)
	g, u := newRows(T, m.inter), newRows(T, m.inter)
	scale := 1 / math.Sqrt(float64(m.headDim))
	groups := m.heads / m.kvHeads
	scores := make([]float64, T)
	for _, L := range m.layers {
		for t := range T {
			rmsNorm(hn[t], x[t], L.inNorm, m.eps)
			m.see(L.q, hn[t])
			L.q.apply(q[t], hn[t])
			m.see(L.k, hn[t])
			L.k.apply(k[t], hn[t])
			m.see(L.v, hn[t])
			L.v.apply(v[t], hn[t])
			m.rope(q[t], m.heads, t)
			m.rope(k[t], m.kvHeads, t)
		}
		// Causal attention: query t sees keys 0..t.
		for head := range m.heads {
			kvh := head / groups
			qo, ko := head*m.headDim, kvh*m.headDim
			for t := range T {
				qv := q[t][qo : qo+m.headDim]
				for j := 0; j <= t; j++ {
					scores[j] = dot(qv, k[j][ko:ko+m.headDim]) * scale
				}
				softmax(scores[:t+1])
				out := attn[t][qo : qo+m.headDim]
				for c := range out {
					var s float64
					for j := 0; j <= t; j++ {
						s += scores[j] * float64(v[j][ko+c])
					}
					out[c] = float32(s)
				}
			}
		}
		for t := range T {
			m.see(L.o, attn[t])
			L.o.apply(proj[t], attn[t])
			addTo(x[t], proj[t])
			rmsNorm(hn[t], x[t], L.postNorm, m.eps)
			m.see(L.gate, hn[t])
			L.gate.apply(g[t], hn[t])
			m.see(L.up, hn[t])
			L.up.apply(u[t], hn[t])
			swiglu(g[t], u[t])
			m.see(L.down, g[t])
			L.down.apply(proj[t], g[t])
			addTo(x[t], proj[t])
		}
	}
	logits := newRows(T, m.vocab)
	head := linear{w: m.lmHead, out: m.vocab, in: h, name: "lm_head.weight"}
	for t := range T {
		rmsNorm(hn[t], x[t], m.norm, m.eps)
		m.see(head, hn[t])
		head.apply(logits[t], hn[t])
	}
	return logits, nil
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

// rope rotates each head of x (heads × headDim) in place for position pos,
// the rotate_half way: pairs are (i, i+headDim/2).
func (m *Model) rope(x []float32, heads, pos int) {
	half := m.headDim / 2
	for i, f := range m.invFreq {
		sin, cos := math.Sincos(float64(pos) * f)
		for hh := range heads {
			a := x[hh*m.headDim+i : hh*m.headDim+i+half+1]
			x0, x1 := float64(a[0]), float64(a[half])
			a[0] = float32(x0*cos - x1*sin)
			a[half] = float32(x1*cos + x0*sin)
		}
	}
}

// rmsNorm sets dst = x / sqrt(mean(x²) + eps) * w.
func rmsNorm(dst, x, w []float32, eps float64) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	for i, v := range x {
		dst[i] = w[i] * float32(float64(v)*r)
	}
}

// dot returns Σ a[i]·b[i] accumulated in float64 (four partial sums).
func dot(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i]) * float64(b[i])
		s1 += float64(a[i+1]) * float64(b[i+1])
		s2 += float64(a[i+2]) * float64(b[i+2])
		s3 += float64(a[i+3]) * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i]) * float64(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// softmax replaces s by exp(s - max) / sum.
func softmax(s []float64) {
	mx := math.Inf(-1)
	for _, v := range s {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range s {
		s[i] = math.Exp(v - mx)
		sum += s[i]
	}
	for i := range s {
		s[i] /= sum
	}
}

// swiglu sets g = silu(g) * u.
func swiglu(g, u []float32) {
	u = u[:len(g)]
	for i, v := range g {
		x := float64(v)
		g[i] = float32(x / (1 + math.Exp(-x)) * float64(u[i]))
	}
}

func addTo(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}

// parallelMin is the weight count below which a matrix-vector product stays
// on one goroutine.
const parallelMin = 1 << 17

// apply sets dst = W·x + b, splitting output rows over cores for big W.
func (l linear) apply(dst, x []float32) {
	rows := func(lo, hi int) {
		for o := lo; o < hi; o++ {
			s := dot(x, l.w[o*l.in:(o+1)*l.in])
			if l.b != nil {
				s += float64(l.b[o])
			}
			dst[o] = float32(s)
		}
	}
	workers := runtime.GOMAXPROCS(0)
	if workers == 1 || l.out*l.in < parallelMin {
		rows(0, l.out)
		return
	}
	var wg sync.WaitGroup
	step := (l.out + workers - 1) / workers
	for lo := 0; lo < l.out; lo += step {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			rows(lo, hi)
		}(lo, min(lo+step, l.out))
	}
	wg.Wait()
}
