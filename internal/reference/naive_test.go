package reference_test

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/hf"
)

// naiveSpec is the test's own description of one model class, written from
// the transformers modeling files independently of the package's table.
type naiveSpec struct {
	prefix                  string // "model." or a language tower's
	headName                string // untied head ("lm_head.weight")
	qkvBias, oBias, mlpBias bool
	qkNorm                  bool // q_norm/k_norm per head before RoPE
	gemma                   bool // (1+w) gains, four norms per layer
	gelu                    bool // gelu_pytorch_tanh instead of silu
	window                  []int
	theta, posDiv           []float64 // per layer RoPE base and linear factor
	scale                   float64   // score multiplier
	attnCap, finalCap       float64
	embedScale              float64 // 0: none
	tied                    bool
}

// llamaNaive describes LlamaForCausalLM for cfg.
func llamaNaive(cfg *hf.Config) naiveSpec {
	s := naiveSpec{prefix: "model.", headName: "lm_head.weight", qkvBias: cfg.AttentionBias,
		oBias: cfg.AttentionBias, mlpBias: cfg.MLPBias, scale: 1 / math.Sqrt(float64(cfg.HeadDim)),
		tied: cfg.TieWordEmbeddings}
	div := 1.0
	if rs := cfg.RopeScaling; rs != nil && rs.RopeType == "linear" {
		div = rs.Factor
	}
	for range cfg.NumHiddenLayers {
		s.window = append(s.window, 0)
		s.theta = append(s.theta, cfg.RopeTheta)
		s.posDiv = append(s.posDiv, div)
	}
	return s
}

// naiveForward is a deliberately literal float64 transcription of the
// Hugging Face forward pass: tensors as nested slices, repeat_kv
// materialised as a copy, rotate_half with cat(freqs, freqs), an explicit
// [T,T] additive mask with -Inf outside the causal (and sliding) window,
// eager attention over the whole sequence.
func naiveForward(cfg *hf.Config, s naiveSpec, get func(string) []float32, ids []int) [][]float64 {
	H, hd, nh, nkv := cfg.HiddenSize, cfg.HeadDim, cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	T := len(ids)
	linear := func(x []float64, name string, out int, bias bool) []float64 {
		w := get(name + ".weight")
		in := len(x)
		y := make([]float64, out)
		for o := range out {
			for i := range in {
				y[o] += float64(w[o*in+i]) * x[i]
			}
			if bias {
				y[o] += float64(get(name + ".bias")[o])
			}
		}
		return y
	}
	norm := func(x []float64, name string) []float64 {
		g := get(name)
		var ms float64
		for _, v := range x {
			ms += v * v / float64(len(x))
		}
		y := make([]float64, len(x))
		for i := range x {
			gain := float64(g[i])
			if s.gemma {
				gain = 1 + gain
			}
			y[i] = gain * x[i] / math.Sqrt(ms+cfg.RMSNormEps)
		}
		return y
	}
	// split reshapes [n·hd] into n heads.
	split := func(x []float64, n int) [][]float64 {
		out := make([][]float64, n)
		for h := range n {
			out[h] = x[h*hd : (h+1)*hd]
		}
		return out
	}
	rope := func(x []float64, pos int, theta, div float64) []float64 {
		cos, sin := make([]float64, hd), make([]float64, hd)
		for i := 0; i < hd/2; i++ {
			f := float64(pos) / div / math.Pow(theta, float64(2*i)/float64(hd))
			cos[i], cos[i+hd/2] = math.Cos(f), math.Cos(f)
			sin[i], sin[i+hd/2] = math.Sin(f), math.Sin(f)
		}
		rot := append(append([]float64{}, x[hd/2:]...), x[:hd/2]...)
		for i := 0; i < hd/2; i++ {
			rot[i] = -rot[i]
		}
		y := make([]float64, hd)
		for i := range y {
			y[i] = x[i]*cos[i] + rot[i]*sin[i]
		}
		return y
	}
	emb := get(s.prefix + "embed_tokens.weight")
	x := make([][]float64, T)
	for t, id := range ids {
		x[t] = make([]float64, H)
		for i := range H {
			x[t][i] = float64(emb[id*H+i])
			if s.embedScale != 0 {
				x[t][i] *= s.embedScale
			}
		}
	}
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("%slayers.%d.", s.prefix, l)
		// mask[i][j]: 0 where query i may see key j, -Inf elsewhere.
		mask := make([][]float64, T)
		for i := range T {
			mask[i] = make([]float64, T)
			for j := range T {
				if j > i || s.window[l] > 0 && i-j >= s.window[l] {
					mask[i][j] = math.Inf(-1)
				}
			}
		}
		q := make([][][]float64, T) // [T][nh][hd]
		k := make([][][]float64, T) // [T][nkv][hd]
		v := make([][][]float64, T)
		for t := range T {
			h := norm(x[t], p+"input_layernorm.weight")
			q[t] = split(linear(h, p+"self_attn.q_proj", nh*hd, s.qkvBias), nh)
			k[t] = split(linear(h, p+"self_attn.k_proj", nkv*hd, s.qkvBias), nkv)
			v[t] = split(linear(h, p+"self_attn.v_proj", nkv*hd, s.qkvBias), nkv)
			for h := range nh {
				if s.qkNorm {
					q[t][h] = norm(q[t][h], p+"self_attn.q_norm.weight")
				}
				q[t][h] = rope(q[t][h], t, s.theta[l], s.posDiv[l])
			}
			for h := range nkv {
				if s.qkNorm {
					k[t][h] = norm(k[t][h], p+"self_attn.k_norm.weight")
				}
				k[t][h] = rope(k[t][h], t, s.theta[l], s.posDiv[l])
			}
		}
		// repeat_kv: query head h uses kv head h / (nh/nkv).
		g := nh / nkv
		krep := make([][][]float64, T)
		vrep := make([][][]float64, T)
		for t := range T {
			for j := range nkv {
				for r := 0; r < g; r++ {
					krep[t] = append(krep[t], k[t][j])
					vrep[t] = append(vrep[t], v[t][j])
				}
			}
		}
		attn := make([][]float64, T)
		for t := range T {
			for h := range nh {
				w := make([]float64, T)
				for j := range T {
					for c := range hd {
						w[j] += q[t][h][c] * krep[j][h][c]
					}
					w[j] *= s.scale
					if s.attnCap != 0 {
						w[j] = math.Tanh(w[j]/s.attnCap) * s.attnCap
					}
					w[j] += mask[t][j]
				}
				mx := math.Inf(-1)
				for _, s := range w {
					mx = math.Max(mx, s)
				}
				var sum float64
				for j := range w {
					w[j] = math.Exp(w[j] - mx)
					sum += w[j]
				}
				for c := range hd {
					var o float64
					for j := range T {
						o += w[j] / sum * vrep[j][h][c]
					}
					attn[t] = append(attn[t], o)
				}
			}
		}
		for t := range T {
			o := linear(attn[t], p+"self_attn.o_proj", H, s.oBias)
			if s.gemma {
				o = norm(o, p+"post_attention_layernorm.weight")
			}
			for i := range H {
				x[t][i] += o[i]
			}
			var h []float64
			if s.gemma {
				h = norm(x[t], p+"pre_feedforward_layernorm.weight")
			} else {
				h = norm(x[t], p+"post_attention_layernorm.weight")
			}
			gate := linear(h, p+"mlp.gate_proj", cfg.IntermediateSize, s.mlpBias)
			up := linear(h, p+"mlp.up_proj", cfg.IntermediateSize, s.mlpBias)
			for i := range gate {
				a := gate[i]
				if s.gelu {
					gate[i] = 0.5 * a * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(a+0.044715*a*a*a)))
				} else {
					gate[i] = a / (1 + math.Exp(-a))
				}
				gate[i] *= up[i]
			}
			d := linear(gate, p+"mlp.down_proj", H, s.mlpBias)
			if s.gemma {
				d = norm(d, p+"post_feedforward_layernorm.weight")
			}
			for i := range H {
				x[t][i] += d[i]
			}
		}
	}
	head := s.headName
	if s.tied {
		head = s.prefix + "embed_tokens.weight"
	}
	head = head[:len(head)-len(".weight")]
	out := make([][]float64, T)
	for t := range T {
		out[t] = linear(norm(x[t], s.prefix+"norm.weight"), head, cfg.VocabSize, false)
		if s.finalCap != 0 {
			for v := range out[t] {
				out[t][v] = math.Tanh(out[t][v]/s.finalCap) * s.finalCap
			}
		}
	}
	return out
}
