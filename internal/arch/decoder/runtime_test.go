package decoder

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/runtime"
)

// refModel is a float64 LLaMA decoder over the checkpoint's weights
// rounded to fp16 (what the packages hold), written directly from the
// Hugging Face formulas.
type refModel struct {
	t    testing.TB
	cfg  *hf.Config
	ckpt *hf.Checkpoint
	inv  []float64
	// cache[l] holds K and V per position: [pos][kvH*d].
	k, v [][][]float64
}

func newRef(t testing.TB, cfg *hf.Config, ckpt *hf.Checkpoint) *refModel {
	inv := refInvFreq(cfg.RopeTheta, cfg.HeadDim, cfg.RopeScaling)
	return &refModel{t: t, cfg: cfg, ckpt: ckpt, inv: inv,
		k: make([][][]float64, cfg.NumHiddenLayers), v: make([][][]float64, cfg.NumHiddenLayers)}
}

func (r *refModel) w(name string) []float64 {
	h, _, err := r.ckpt.Float16(name)
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]float64, len(h))
	for i, x := range h {
		out[i] = float64(halfToFloat(x))
	}
	return out
}

func matVec(w, x []float64, rows int) []float64 {
	cols := len(x)
	out := make([]float64, rows)
	for i := range out {
		s := 0.0
		for j, xj := range x {
			s += w[i*cols+j] * xj
		}
		out[i] = s
	}
	return out
}

func (r *refModel) linear(name string, x []float64, rows int, bias bool) []float64 {
	y := matVec(r.w(name+".weight"), x, rows)
	if bias {
		for i, b := range r.w(name + ".bias") {
			y[i] += b
		}
	}
	return y
}

func (r *refModel) rms(x []float64, gamma string) []float64 {
	g := r.w(gamma)
	ss := 0.0
	for _, e := range x {
		ss += e * e
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+r.cfg.RMSNormEps)
	out := make([]float64, len(x))
	for i, e := range x {
		out[i] = e * s * g[i]
	}
	return out
}

func (r *refModel) rope(x []float64, heads, pos int) {
	d := r.cfg.HeadDim
	for h := 0; h < heads; h++ {
		v := x[h*d : (h+1)*d]
		for i, f := range r.inv {
			s, c := math.Sincos(float64(pos) * f)
			a, b := v[i], v[i+d/2]
			v[i], v[i+d/2] = a*c-b*s, b*c+a*s
		}
	}
}

// layer runs layer l on one token at pos (positions must come in order).
// With attnOnly it stops after the attention residual.
func (r *refModel) layer(l int, x []float64, pos int, attnOnly bool) []float64 {
	cfg := r.cfg
	H, nH, kvH, d := cfg.HiddenSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	p := "model.layers." + itoa(l) + "."
	h := r.rms(x, p+"input_layernorm.weight")
	q := r.linear(p+"self_attn.q_proj", h, nH*d, cfg.AttentionBias)
	k := r.linear(p+"self_attn.k_proj", h, kvH*d, cfg.AttentionBias)
	v := r.linear(p+"self_attn.v_proj", h, kvH*d, cfg.AttentionBias)
	r.rope(q, nH, pos)
	r.rope(k, kvH, pos)
	if len(r.k[l]) != pos {
		r.t.Fatalf("reference: layer %d at position %d with %d cached", l, pos, len(r.k[l]))
	}
	r.k[l], r.v[l] = append(r.k[l], k), append(r.v[l], v)
	attn := make([]float64, nH*d)
	for hd := 0; hd < nH; hd++ {
		kv := hd / (nH / kvH)
		sc := make([]float64, pos+1)
		mx := math.Inf(-1)
		for j := range sc {
			s := 0.0
			for i := 0; i < d; i++ {
				s += q[hd*d+i] * r.k[l][j][kv*d+i]
			}
			sc[j] = s / math.Sqrt(float64(d))
			mx = math.Max(mx, sc[j])
		}
		sum := 0.0
		for j := range sc {
			sc[j] = math.Exp(sc[j] - mx)
			sum += sc[j]
		}
		for j := range sc {
			for i := 0; i < d; i++ {
				attn[hd*d+i] += sc[j] / sum * r.v[l][j][kv*d+i]
			}
		}
	}
	o := r.linear(p+"self_attn.o_proj", attn, H, cfg.AttentionBias)
	x2 := make([]float64, H)
	for i := range x2 {
		x2[i] = x[i] + o[i]
	}
	if attnOnly {
		return x2
	}
	h = r.rms(x2, p+"post_attention_layernorm.weight")
	I := cfg.IntermediateSize
	g := r.linear(p+"mlp.gate_proj", h, I, cfg.MLPBias)
	u := r.linear(p+"mlp.up_proj", h, I, cfg.MLPBias)
	for i := range g {
		g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	dn := r.linear(p+"mlp.down_proj", g, H, cfg.MLPBias)
	for i := range dn {
		dn[i] += x2[i]
	}
	return dn
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + itoa(i%10)
}

func maxAbsDiff(got []float32, want []float64) float64 {
	m := 0.0
	for i := range want {
		m = math.Max(m, math.Abs(float64(got[i])-want[i]))
	}
	return m
}

func load(t testing.TB, c *Converter, p arch.Part, chunk int, fn string) *runtime.Function {
	t.Helper()
	m, err := runtime.Load(build(t, c, p, chunk).Program)
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.Function(fn)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func maskRows(C int, rows ...int) []float32 {
	m := make([]float32, len(rows)*C)
	for r, p := range rows {
		for j := 0; j < C; j++ {
			if j > p {
				m[r*C+j] = float32(math.Inf(-1))
			}
		}
	}
	return m
}

// TestDecodeMatchesFloat64 runs the tiny model's packages in the CPU
// interpreter: prefill of 4 tokens through both chunks of the combined
// packages, then 3 decode steps, comparing each layer's hidden states,
// the final norm, the KV cache and the logits with a float64 computation.
func TestDecodeMatchesFloat64(t *testing.T) {
	t.Run("tiny-random", func(t *testing.T) {
		cfg, ckpt := loadTiny(t)
		testDecode(t, cfg, ckpt)
	})
	// Larger weights make attention sharp (RoPE and masking matter), with
	// 4 query heads per KV head, llama3 RoPE, biases and tied embeddings.
	t.Run("synthetic", func(t *testing.T) {
		cfg, ckpt := synthModel(t, synth.Options{Hidden: 64, Intermediate: 96, Layers: 2, Heads: 8, KVHeads: 2,
			Vocab: 512, Std: 0.15, Seed: 11, TieEmbeddings: true, AttentionBias: true, MLPBias: true,
			RopeTheta: 500000, RopeScaling: &hf.RopeScaling{RopeType: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 64}})
		testDecode(t, cfg, ckpt)
	})
}

func testDecode(t *testing.T, cfg *hf.Config, ckpt *hf.Checkpoint) {
	const C, S, B = 16, 24, 4
	c := newConv(t, cfg, ckpt, Options{ContextLength: C, StateLength: S, BatchSize: B, NumChunks: 2})
	H := cfg.HiddenSize
	infer := []*runtime.Function{load(t, c, arch.PartFFNPF, 0, "infer"), load(t, c, arch.PartFFNPF, 1, "infer")}
	prefill := []*runtime.Function{load(t, c, arch.PartFFNPF, 0, "prefill"), load(t, c, arch.PartFFNPF, 1, "prefill")}
	lm := load(t, c, arch.PartLMHead, 0, "main")
	st := prefill[0].NewState()
	ref := newRef(t, cfg, ckpt)
	const tol = 1e-2 // fp16 arithmetic on values of magnitude ~1 (measured ≤ 2e-3)

	rng := rand.New(rand.NewPCG(1, 2))
	token := func() []float64 {
		x := make([]float64, H)
		for i := range x {
			x[i] = float64(halfToFloat(floatToHalf(float32(rng.NormFloat64()))))
		}
		return x
	}
	f32 := func(x []float64) []float32 {
		o := make([]float32, len(x))
		for i, e := range x {
			o[i] = float32(e)
		}
		return o
	}

	// Prefill positions 0..3 in one batch.
	xs := make([][]float64, B)
	var batch []float32
	for i := range xs {
		xs[i] = token()
		batch = append(batch, f32(xs[i])...)
	}
	in := map[string]*runtime.Tensor{
		"hidden_states": runtime.NewFloat16([]int{1, B, H}, batch),
		"position_ids":  runtime.NewInt32([]int{B}, []int32{0, 1, 2, 3}),
		"causal_mask":   runtime.NewFloat16([]int{1, 1, B, C}, maskRows(C, 0, 1, 2, 3)),
		"current_pos":   runtime.NewInt32([]int{1}, []int32{0}),
	}
	out, err := prefill[0].Predict(in, st)
	if err != nil {
		t.Fatal(err)
	}
	l0 := make([][]float64, B)
	var want0 []float64
	for i := range xs {
		l0[i] = ref.layer(0, xs[i], i, false)
		want0 = append(want0, l0[i]...)
	}
	if e := maxAbsDiff(out["output_hidden_states"].F, want0); e > tol {
		t.Errorf("prefill chunk 1 (layer 0): max error %g", e)
	} else {
		t.Logf("prefill chunk 1 (layer 0): max error %g", e)
	}
	in["hidden_states"] = out["output_hidden_states"]
	out, err = prefill[1].Predict(in, st)
	if err != nil {
		t.Fatal(err)
	}
	var want1 []float64
	for i := range xs {
		a := ref.layer(1, l0[i], i, true)
		if i == 0 {
			want1 = a // the last chunk returns the first row, after attention only
		}
	}
	if got := out["output_hidden_states"]; len(got.F) != H || maxAbsDiff(got.F, want1) > tol {
		t.Errorf("prefill chunk 2: shape %v, max error %g", got.Shape, maxAbsDiff(got.F, want1))
	}
	// ANEMLL's prefill leaves layer 1 K/V written for all 4 positions.
	cache := st.Tensor(StateName)
	kvH, d, L := cfg.NumKeyValueHeads, cfg.HeadDim, cfg.NumHiddenLayers
	for l := 0; l < L; l++ {
		for pos := 0; pos < B; pos++ {
			for h := 0; h < kvH; h++ {
				for i := 0; i < d; i++ {
					k := cache.F[((l*kvH+h)*S+pos)*d+i]
					v := cache.F[(((L+l)*kvH+h)*S+pos)*d+i]
					if math.Abs(float64(k)-ref.k[l][pos][h*d+i]) > tol || math.Abs(float64(v)-ref.v[l][pos][h*d+i]) > tol {
						t.Fatalf("cache layer %d pos %d head %d [%d]: K %v V %v, want %v %v", l, pos, h, i, k, v, ref.k[l][pos][h*d+i], ref.v[l][pos][h*d+i])
					}
				}
			}
		}
	}

	// Decode positions 4..6, one token at a time through both chunks.
	for pos := B; pos < B+3; pos++ {
		x := token()
		in := map[string]*runtime.Tensor{
			"hidden_states": runtime.NewFloat16([]int{1, 1, H}, f32(x)),
			"position_ids":  runtime.NewInt32([]int{1}, []int32{int32(pos)}),
			"causal_mask":   runtime.NewFloat16([]int{1, 1, 1, C}, maskRows(C, pos)),
			"current_pos":   runtime.NewInt32([]int{1}, []int32{int32(pos)}),
		}
		o0, err := infer[0].Predict(in, st)
		if err != nil {
			t.Fatal(err)
		}
		r0 := ref.layer(0, x, pos, false)
		if e := maxAbsDiff(o0["output_hidden_states"].F, r0); e > tol {
			t.Errorf("decode pos %d layer 0: max error %g", pos, e)
		} else if pos == B {
			t.Logf("decode layer 0: max error %g", e)
		}
		in["hidden_states"] = o0["output_hidden_states"]
		o1, err := infer[1].Predict(in, st)
		if err != nil {
			t.Fatal(err)
		}
		r1 := ref.rms(ref.layer(1, r0, pos, false), "model.norm.weight")
		if e := maxAbsDiff(o1["output_hidden_states"].F, r1); e > tol {
			t.Errorf("decode pos %d final hidden: max error %g", pos, e)
		}
		lo, err := lm.Predict(map[string]*runtime.Tensor{"hidden_states": o1["output_hidden_states"]}, nil)
		if err != nil {
			t.Fatal(err)
		}
		logits := matVec(ref.w(c.lmHead), r1, cfg.VocabSize)
		var got []float32
		for i := 1; i <= 8; i++ {
			got = append(got, lo["logits"+itoa(i)].F...)
		}
		if e := maxAbsDiff(got, logits); e > tol {
			t.Errorf("decode pos %d logits: max error %g", pos, e)
		}
	}

	// Embeddings: rows of the table, for both enumerated shapes.
	emb := load(t, c, arch.PartEmbeddings, 0, "main")
	table := ref.w("model.embed_tokens.weight")
	for _, ids := range [][]int32{{7}, {0, 511, 3, 42}} {
		o, err := emb.Predict(map[string]*runtime.Tensor{"input_ids": runtime.NewInt32([]int{1, len(ids)}, ids)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []float64
		for _, id := range ids {
			want = append(want, table[int(id)*H:(int(id)+1)*H]...)
		}
		if hs := o["hidden_states"]; len(hs.F) != len(want) || maxAbsDiff(hs.F, want) != 0 {
			t.Errorf("embeddings of %v differ from the table rows", ids)
		}
	}
}
