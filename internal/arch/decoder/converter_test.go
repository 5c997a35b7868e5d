package decoder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/quant"
)

// small is a synthetic model small enough to build many times per test.
func small() synth.Options {
	return synth.Options{Hidden: 32, Intermediate: 64, Layers: 5, Heads: 4, KVHeads: 2, Vocab: 96, Seed: 7}
}

func synthModel(t testing.TB, o synth.Options) (*hf.Config, *hf.Checkpoint) {
	t.Helper()
	dir := t.TempDir()
	if err := synth.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ckpt, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ckpt.Close() })
	return cfg, ckpt
}

func newConv(t testing.TB, cfg *hf.Config, ckpt *hf.Checkpoint, o Options) *Converter {
	t.Helper()
	c, err := NewConverter(cfg, ckpt, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func build(t testing.TB, c *Converter, p arch.Part, chunk int) *coreml.Package {
	t.Helper()
	pkg, err := c.Part(p, chunk)
	if err != nil {
		t.Fatalf("%s chunk %d: %v", p, chunk, err)
	}
	if err := pkg.Program.Validate(); err != nil {
		t.Fatalf("%s chunk %d: %v", p, chunk, err)
	}
	return pkg
}

func mainFn(pkg *coreml.Package) *mil.Function { return pkg.Program.Functions[0] }

func findOp(f *mil.Function, name string) *mil.Op {
	for _, op := range f.Body.Ops {
		if op.Name == name {
			return op
		}
	}
	return nil
}

func constInts(t testing.TB, f *mil.Function, name string) []int64 {
	t.Helper()
	op := findOp(f, name)
	if op == nil || op.ConstValue() == nil {
		t.Fatalf("no const %q in %s", name, f.Name)
	}
	v, err := op.ConstValue().Ints()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func outputType(f *mil.Function, name string) mil.Type {
	for _, op := range f.Body.Ops {
		for _, o := range op.Outputs {
			if o.Name == name {
				return o.Type
			}
		}
	}
	return mil.Type{}
}

// layersIn returns the global layers whose q_proj weight a function uses.
func layersIn(f *mil.Function, L int) []int {
	var out []int
	for l := 0; l < L; l++ {
		if findOp(f, fmt.Sprintf("model_model_layers_%d_self_attn_q_proj_weight_to_fp16", l)) != nil {
			out = append(out, l)
		}
	}
	return out
}

func TestChunkCounts(t *testing.T) {
	cfg, ckpt := synthModel(t, small())
	L := cfg.NumHiddenLayers
	for _, chunks := range []int{1, 2, 3, 5} {
		t.Run(fmt.Sprint(chunks), func(t *testing.T) {
			c := newConv(t, cfg, ckpt, Options{ContextLength: 32, BatchSize: 8, NumChunks: chunks})
			seen := make([]int, L)
			for i, r := range c.Layout() {
				last := i == chunks-1
				ffn := mainFn(build(t, c, arch.PartFFN, i))
				pre := mainFn(build(t, c, arch.PartPrefill, i))
				got := layersIn(ffn, L)
				if len(got) != r.Len() || got[0] != r.Start {
					t.Fatalf("chunk %d: FFN has layers %v, layout %v", i, got, r)
				}
				if pg := layersIn(pre, L); fmt.Sprint(pg) != fmt.Sprint(got) {
					t.Fatalf("chunk %d: prefill layers %v, FFN %v", i, pg, got)
				}
				for _, l := range got {
					seen[l]++
					// K goes to slot l, V to slot L+l.
					for kv, slot := range []int{l, L + l} {
						b := constInts(t, ffn, fmt.Sprintf("layers_%d_slot%s", l, map[int]string{0: "", 1: "_0"}[kv]))
						if b[0] != int64(slot) || b[1] != 0 {
							t.Errorf("layer %d kv %d: slice_update begins at slot %v, want %d", l, kv, b, slot)
						}
					}
				}
				hist := histogram(ffn)
				norms := 2*r.Len() + map[bool]int{true: 1}[last]
				if hist["layer_norm"] != norms {
					t.Errorf("chunk %d FFN: %d layer_norms, want %d", i, hist["layer_norm"], norms)
				}
				if (findOp(ffn, "model_model_norm_weight_to_fp16") != nil) != last {
					t.Errorf("chunk %d FFN: final norm present = %v, want %v", i, !last, last)
				}
				// Prefill: the last chunk skips the last MLP and returns one row.
				ph := histogram(pre)
				wantConv := 6 * r.Len()
				wantOut := []int64{1, 8, 32}
				if last {
					wantConv -= 3
					wantOut = []int64{1, 1, 32}
				}
				if ph["conv"] != wantConv || findOp(pre, "model_model_norm_weight_to_fp16") != nil {
					t.Errorf("chunk %d prefill: %d convs (want %d), final norm %v", i, ph["conv"], wantConv, findOp(pre, "model_model_norm_weight_to_fp16") != nil)
				}
				if got := outputType(pre, "output_hidden_states").Shape; !equalShape(got, wantOut) {
					t.Errorf("chunk %d prefill output %v, want %v", i, got, wantOut)
				}
				st := pre.Inputs[4].Type.Elem.Shape
				if !equalShape(st, []int64{int64(2 * L), 2, 32, 8}) {
					t.Errorf("state shape %v", st)
				}
			}
			for l, n := range seen {
				if n != 1 {
					t.Errorf("layer %d is in %d chunks", l, n)
				}
			}
		})
	}
}

func TestGQAAndHeadDim(t *testing.T) {
	for _, tc := range []struct {
		heads, kv, hidden, headDim int
	}{
		{4, 4, 32, 0}, {4, 2, 32, 0}, {8, 2, 32, 0}, {8, 1, 32, 0},
		{4, 2, 48, 16}, // explicit head_dim ≠ hidden/heads
		{2, 1, 64, 8},  // head_dim smaller than hidden/heads
	} {
		t.Run(fmt.Sprintf("h%d_kv%d_H%d_d%d", tc.heads, tc.kv, tc.hidden, tc.headDim), func(t *testing.T) {
			o := synth.Options{Hidden: tc.hidden, Intermediate: 64, Layers: 2, Heads: tc.heads, KVHeads: tc.kv, HeadDim: tc.headDim, Vocab: 64, Seed: 3}
			cfg, ckpt := synthModel(t, o)
			d := cfg.HeadDim
			if tc.headDim > 0 && d != tc.headDim {
				t.Fatalf("config head_dim %d", d)
			}
			c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4, NumChunks: 1})
			for _, p := range []arch.Part{arch.PartFFN, arch.PartPrefill} {
				f := mainFn(build(t, c, p, 0))
				g := tc.heads / tc.kv
				if n := histogram(f)["tile"]; (g == 1) != (n == 0) || g > 1 && n != 4 {
					t.Errorf("%s: %d tile ops for %d query heads per KV head", p, n, g)
				}
				if g > 1 {
					if reps := constInts(t, f, "layers_0_k_cache_rep_reps"); fmt.Sprint(reps) != fmt.Sprint([]int64{1, int64(g), 1, 1}) {
						t.Errorf("tile reps %v", reps)
					}
				}
				wq := outputType(f, "model_model_layers_0_self_attn_q_proj_weight_to_fp16").Shape
				wk := outputType(f, "model_model_layers_0_self_attn_k_proj_weight_to_fp16").Shape
				wo := outputType(f, "model_model_layers_0_self_attn_o_proj_weight_to_fp16").Shape
				if !equalShape(wq, []int64{int64(tc.heads * d), int64(tc.hidden), 1, 1}) ||
					!equalShape(wk, []int64{int64(tc.kv * d), int64(tc.hidden), 1, 1}) ||
					!equalShape(wo, []int64{int64(tc.hidden), int64(tc.heads * d)}) {
					t.Errorf("weight shapes q %v k %v o %v", wq, wk, wo)
				}
				scores := outputType(f, "layers_0_scores").Shape
				T := int64(map[arch.Part]int{arch.PartFFN: 1, arch.PartPrefill: 4}[p])
				if !equalShape(scores, []int64{1, int64(tc.heads), T, 16}) {
					t.Errorf("%s: attention scores %v", p, scores)
				}
				st := f.Inputs[4].Type.Elem.Shape
				if !equalShape(st, []int64{4, int64(tc.kv), 16, int64(d)}) {
					t.Errorf("state %v", st)
				}
				// The scale is 1/sqrt(head_dim), not 1/sqrt(hidden/heads).
				sc, err := findOp(f, "layers_0_scaled_y").ConstValue().Floats()
				if err != nil || math.Abs(float64(sc[0])-1/math.Sqrt(float64(d))) > 1e-3/math.Sqrt(float64(d)) {
					t.Errorf("attention scale %v, want 1/sqrt(%d)", sc, d)
				}
			}
		})
	}
}

func valueBytes(t testing.TB, v *mil.Value) []byte {
	t.Helper()
	b, err := v.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.CheckSize(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ckptHalf(t testing.TB, ckpt *hf.Checkpoint, name string) []byte {
	t.Helper()
	h, _, err := ckpt.Float16(name)
	if err != nil {
		t.Fatal(err)
	}
	return halfBytes(h)
}

func TestLazyWeights(t *testing.T) {
	cfg, ckpt := loadTiny(t)
	var overflow atomic.Int64
	c := newConv(t, cfg, ckpt, Options{ContextLength: 256, StateLength: 512,
		OnOverflow: func(_ string, n int) { overflow.Add(int64(n)) }})
	f := mainFn(build(t, c, arch.PartFFN, 0))
	for _, name := range []string{"model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"} {
		v := findOp(f, milName(name)).ConstValue()
		if v.Data != nil || v.Source == nil {
			t.Fatalf("%s: weight is not lazy", name)
		}
		if got, want := valueBytes(t, v), ckptHalf(t, ckpt, name); !bytes.Equal(got, want) {
			t.Errorf("%s: bytes differ from the checkpoint's fp16 conversion", name)
		}
	}
	emb := findOp(mainFn(build(t, c, arch.PartEmbeddings, 0)), "embed_tokens_weight_to_fp16").ConstValue()
	if !bytes.Equal(valueBytes(t, emb), ckptHalf(t, ckpt, "model.embed_tokens.weight")) {
		t.Error("embedding table differs from the checkpoint")
	}
	lm := mainFn(build(t, c, arch.PartLMHead, 0))
	all := ckptHalf(t, ckpt, "lm_head.weight")
	for i := 0; i < 8; i++ {
		v := findOp(lm, fmt.Sprintf("lm_head8_%d_weight_to_fp16", i+1)).ConstValue()
		if want := all[i*64*64*2 : (i+1)*64*64*2]; !bytes.Equal(valueBytes(t, v), want) {
			t.Errorf("LM head part %d: rows differ from lm_head.weight", i+1)
		}
	}
	if overflow.Load() != 0 {
		t.Errorf("overflow count %d for a ±0.1 model", overflow.Load())
	}
}

func TestTiedEmbeddings(t *testing.T) {
	o := small()
	o.TieEmbeddings = true
	cfg, ckpt := synthModel(t, o)
	if _, ok := ckpt.Info("lm_head.weight"); ok {
		t.Fatal("synth wrote lm_head.weight for a tied model")
	}
	c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4})
	if c.Options().SplitLMHead != 8 {
		t.Fatalf("split %d, want 8", c.Options().SplitLMHead)
	}
	lm := mainFn(build(t, c, arch.PartLMHead, 0))
	emb := ckptHalf(t, ckpt, "model.embed_tokens.weight")
	rows := 96 / 8 * 32 * 2
	for i := 0; i < 8; i++ {
		v := findOp(lm, fmt.Sprintf("lm_head8_%d_weight_to_fp16", i+1)).ConstValue()
		if !bytes.Equal(valueBytes(t, v), emb[i*rows:(i+1)*rows]) {
			t.Errorf("tied LM head part %d is not the embedding rows", i+1)
		}
	}
	// Untied config without lm_head.weight is refused up front.
	cfg2 := *cfg
	cfg2.TieWordEmbeddings = false
	if _, err := NewConverter(&cfg2, ckpt, Options{ContextLength: 16, BatchSize: 4}); err == nil {
		t.Error("untied config without lm_head.weight accepted")
	}
}

func TestLMHeadSplit(t *testing.T) {
	for _, tc := range []struct{ v, want int }{
		{512, 8}, {32000, 8}, {128256, 8}, {151936, 16}, {32768, 8}, {256000, 16},
		{32001, 8}, {262145, 37}, {131071, 8}, {1048573, 64}, {5, 5}, {1, 1},
	} {
		if got := SplitFor(tc.v, 0); got != tc.want {
			t.Errorf("SplitFor(%d) = %d, want %d", tc.v, got, tc.want)
		}
	}

	o := small()
	o.Vocab = 100
	cfg, ckpt := synthModel(t, o)
	c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4, SplitLMHead: 8})
	pkg := build(t, c, arch.PartLMHead, 0)
	f := mainFn(pkg)
	const P = 13 // ceil(100/8); the last part has 9 real rows and 4 padded
	if len(pkg.Description.Outputs) != 8 {
		t.Fatalf("%d outputs", len(pkg.Description.Outputs))
	}
	for i, out := range pkg.Description.Outputs {
		if out.Name != fmt.Sprintf("logits%d", i+1) || !equalShape(out.Shape, []int64{1, 1, P}) {
			t.Errorf("output %d: %s %v", i, out.Name, out.Shape)
		}
	}
	w := valueBytes(t, findOp(f, "lm_head8_8_weight_to_fp16").ConstValue())
	all := ckptHalf(t, ckpt, "lm_head.weight")
	if !bytes.Equal(w[:9*32*2], all[91*32*2:]) || !bytes.Equal(w[9*32*2:], make([]byte, 4*32*2)) {
		t.Error("last LM head part: want rows 91..99 then zero rows")
	}
	bias, err := findOp(f, "lm_head8_8_pad_bias_to_fp16").ConstValue().Floats()
	if err != nil {
		t.Fatal(err)
	}
	for j, b := range bias {
		if want := j >= 9; math.IsInf(float64(b), -1) != want || !want && b != 0 {
			t.Errorf("pad bias[%d] = %v", j, b)
		}
	}
	if findOp(f, "lm_head8_7_pad_bias_to_fp16") != nil {
		t.Error("unpadded part has a bias")
	}
	if got := pkg.Description.Metadata.UserDefined["com.anemll-go.split_lm_head"]; got != "8" {
		t.Errorf("split metadata %q", got)
	}

	// One output is named "logits"; a split leaving an empty part is refused.
	c1 := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4, SplitLMHead: 1})
	if out := build(t, c1, arch.PartLMHead, 0).Description.Outputs; len(out) != 1 || out[0].Name != "logits" || out[0].Shape[2] != 100 {
		t.Errorf("single split outputs %+v", out)
	}
	if _, err := NewConverter(cfg, ckpt, Options{ContextLength: 16, BatchSize: 4, SplitLMHead: 51}); err == nil {
		t.Error("split 51 of 100 (empty last part) accepted")
	}
}

// refInvFreq is the Hugging Face formula written out independently.
func refInvFreq(theta float64, d int, rs *hf.RopeScaling) []float64 {
	out := make([]float64, d/2)
	for i := range out {
		f := math.Pow(theta, -float64(2*i)/float64(d))
		if rs != nil && rs.RopeType == "linear" {
			f /= rs.Factor
		}
		if rs != nil && rs.RopeType == "llama3" {
			wl := 2 * math.Pi / f
			old := float64(rs.OriginalMaxPositionEmbeddings)
			if wl > old/rs.LowFreqFactor {
				f /= rs.Factor
			} else if wl >= old/rs.HighFreqFactor {
				s := (old/wl - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				f = (1-s)*f/rs.Factor + s*f
			}
		}
		out[i] = f
	}
	return out
}

func TestRope(t *testing.T) {
	for _, tc := range []struct {
		name  string
		theta float64
		d     int
		rs    *hf.RopeScaling
	}{
		{"default", 10000, 16, nil},
		{"linear", 10000, 16, &hf.RopeScaling{RopeType: "linear", Factor: 4}},
		// Llama 3.x: the 64 frequencies fall in all three bands.
		{"llama3", 500000, 128, &hf.RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := synth.Options{Hidden: 2 * tc.d, Intermediate: 32, Layers: 1, Heads: 2, KVHeads: 1, Vocab: 32, RopeTheta: tc.theta, RopeScaling: tc.rs}
			cfg, ckpt := synthModel(t, o)
			inv, err := InvFreq(cfg.HeadDim, cfg.RopeTheta, cfg.RopeScaling)
			if err != nil {
				t.Fatal(err)
			}
			want := refInvFreq(tc.theta, tc.d, tc.rs)
			bands := map[string]int{}
			for i := range want {
				if math.Abs(inv[i]-want[i]) > 1e-15*want[i] {
					t.Errorf("inv_freq[%d] = %g, want %g", i, inv[i], want[i])
				}
				if tc.rs != nil && tc.rs.RopeType == "llama3" {
					base := math.Pow(tc.theta, -float64(2*i)/float64(tc.d))
					switch {
					case inv[i] == base:
						bands["high"]++
					case math.Abs(inv[i]-base/32) < 1e-18:
						bands["low"]++
					default:
						bands["mid"]++
					}
				}
			}
			if tc.rs != nil && tc.rs.RopeType == "llama3" && (bands["high"] == 0 || bands["low"] == 0 || bands["mid"] == 0) {
				t.Errorf("llama3 bands %v: want all three used", bands)
			}
			c := newConv(t, cfg, ckpt, Options{ContextLength: 64, StateLength: 96, BatchSize: 8})
			f := mainFn(build(t, c, arch.PartFFN, 0))
			for _, tbl := range []struct {
				name string
				fn   func(float64) float64
			}{{"rope_cos_to_fp16", math.Cos}, {"rope_sin_to_fp16", math.Sin}} {
				v := findOp(f, tbl.name).ConstValue()
				if !equalShape(v.Type.Shape, []int64{1, 192, int64(tc.d)}) {
					t.Fatalf("%s shape %v, want [1 192 %d] (2·max(C,S) rows)", tbl.name, v.Type.Shape, tc.d)
				}
				got, err := v.Floats()
				if err != nil {
					t.Fatal(err)
				}
				for p := 0; p < 192; p++ {
					for j := 0; j < tc.d; j++ {
						exact := tbl.fn(float64(p) * want[j%(tc.d/2)])
						// fp16 rounding: within half an ulp (2^-11 relative, 2^-25 absolute near 0).
						if e := math.Abs(float64(got[p*tc.d+j]) - exact); e > math.Max(math.Abs(exact)*math.Pow(2, -11), math.Pow(2, -25)) {
							t.Fatalf("%s[%d][%d] = %v, want %v (err %g)", tbl.name, p, j, got[p*tc.d+j], exact, e)
						}
					}
				}
			}
		})
	}
}

func TestOptionErrors(t *testing.T) {
	cfg, ckpt := synthModel(t, small()) // 5 layers, vocab 96
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"negative context", Options{ContextLength: -1}},
		{"batch over context", Options{ContextLength: 16, BatchSize: 32}},
		{"negative batch", Options{ContextLength: 16, BatchSize: -2}},
		{"state below context", Options{ContextLength: 64, StateLength: 32, BatchSize: 8}},
		{"more chunks than layers", Options{ContextLength: 16, BatchSize: 4, NumChunks: 6}},
		{"negative chunks", Options{ContextLength: 16, BatchSize: 4, NumChunks: -1}},
		{"rope table over ANE limit", Options{ContextLength: 8193, BatchSize: 4}},
		{"state over ANE limit", Options{ContextLength: 512, StateLength: 9000, BatchSize: 4}},
		{"5-bit LUT", Options{ContextLength: 16, BatchSize: 4, LUT: LUTBits{FFN: 5}, Palettize: testPalettize, Eligible: quant.Eligible}},
		{"LUT without palettizer", Options{ContextLength: 16, BatchSize: 4, LUT: LUTBits{LMHead: 6}}},
		{"LUT without eligibility rule", Options{ContextLength: 16, BatchSize: 4, LUT: LUTBits{FFN: 4}, Palettize: testPalettize}},
		{"negative group", Options{ContextLength: 16, BatchSize: 4, LUTGroupSize: -8}},
		{"split over vocab", Options{ContextLength: 16, BatchSize: 4, SplitLMHead: 97}},
		{"split rows over ANE limit", Options{ContextLength: 16, BatchSize: 4, SplitLMHead: -1}},
		{"bad prefix", Options{ContextLength: 16, BatchSize: 4, Prefix: "my/model"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewConverter(cfg, ckpt, tc.o)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "decoder: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			t.Log(err)
		})
	}
	c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4, NumChunks: 2})
	for _, p := range []arch.Part{arch.PartFFN, arch.PartPrefill, arch.PartFFNPF} {
		for _, i := range []int{-1, 2} {
			if _, err := c.Part(p, i); err == nil {
				t.Errorf("%s chunk %d accepted", p, i)
			}
		}
	}
	if _, err := c.Part("mlp", 0); err == nil {
		t.Error("unknown part accepted")
	}
	// Checkpoint/config mismatches are found before any build.
	bad := *cfg
	bad.IntermediateSize = 48
	if _, err := NewConverter(&bad, ckpt, Options{ContextLength: 16, BatchSize: 4}); err == nil {
		t.Error("intermediate_size mismatch accepted")
	}
	bad = *cfg
	bad.AttentionBias = true
	if _, err := NewConverter(&bad, ckpt, Options{ContextLength: 16, BatchSize: 4}); err == nil {
		t.Error("attention_bias without bias tensors accepted")
	}
	// A config.json state_length below the context length names its source;
	// an explicit StateLength overrides it.
	bad = *cfg
	bad.StateLength = 8
	const want = "decoder: options: config.json state_length 8 is below the context length 16; pass --state-length"
	if _, err := NewConverter(&bad, ckpt, Options{ContextLength: 16, BatchSize: 4}); err == nil || err.Error() != want {
		t.Errorf("state_length 8 from config.json: %v, want %q", err, want)
	}
	if _, err := NewConverter(&bad, ckpt, Options{ContextLength: 16, BatchSize: 4, StateLength: 16}); err != nil {
		t.Errorf("explicit state length over config.json's: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	cfg, ckpt := synthModel(t, small())
	c := newConv(t, cfg, ckpt, Options{})
	o := c.Options()
	if o.ContextLength != 512 || o.StateLength != 512 || o.BatchSize != 64 || o.NumChunks != 1 ||
		o.Prefix != "llama" || o.LUTGroupSize != 8 || o.SplitLMHead != 8 {
		t.Errorf("defaults %+v", o)
	}
	cfg2 := *cfg
	cfg2.StateLength = 1024 // config.json state_length
	if got := newConv(t, &cfg2, ckpt, Options{}).Options().StateLength; got != 1024 {
		t.Errorf("state length %d, want config's 1024", got)
	}
	if got := newConv(t, &cfg2, ckpt, Options{StateLength: 600}).Options().StateLength; got != 600 {
		t.Errorf("state length %d, want explicit 600", got)
	}
	name, err := newConv(t, cfg, ckpt, Options{Prefix: "m", NumChunks: 5, LUT: LUTBits{FFN: 4, LMHead: 6}, Palettize: testPalettize, Eligible: quant.Eligible}).FileName(arch.PartPrefill, 2)
	if err != nil || name != "m_prefill_lut4_chunk_03of05.mlpackage" {
		t.Errorf("FileName = %q, %v", name, err)
	}
}

func TestBiases(t *testing.T) {
	o := small()
	o.Layers = 1
	o.AttentionBias, o.MLPBias = true, true
	cfg, ckpt := synthModel(t, o)
	c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4})
	f := mainFn(build(t, c, arch.PartFFN, 0))
	for _, tc := range []struct{ op, bias string }{
		{"layers_0_q", "model.layers.0.self_attn.q_proj.bias"},
		{"layers_0_k", "model.layers.0.self_attn.k_proj.bias"},
		{"layers_0_v", "model.layers.0.self_attn.v_proj.bias"},
		{"layers_0_o", "model.layers.0.self_attn.o_proj.bias"},
		{"layers_0_gate", "model.layers.0.mlp.gate_proj.bias"},
		{"layers_0_up", "model.layers.0.mlp.up_proj.bias"},
		{"layers_0_down", "model.layers.0.mlp.down_proj.bias"},
	} {
		op := findOp(f, tc.op)
		args := op.Input("bias")
		if len(args) != 1 || args[0].Name != milName(tc.bias) {
			t.Errorf("%s: bias binding %+v, want %s", tc.op, args, milName(tc.bias))
			continue
		}
		if !bytes.Equal(valueBytes(t, findOp(f, args[0].Name).ConstValue()), ckptHalf(t, ckpt, tc.bias)) {
			t.Errorf("%s: bias values differ", tc.op)
		}
	}
}

func TestLUT(t *testing.T) {
	cfg, ckpt := loadTiny(t)
	c := newConv(t, cfg, ckpt, Options{ContextLength: 256, StateLength: 512, NumChunks: 2,
		LUT: LUTBits{Embeddings: 8, FFN: 4, LMHead: 6}, Palettize: testPalettize, Eligible: quant.Eligible})
	pkg := build(t, c, arch.PartFFN, 0)
	f := mainFn(pkg)
	md := pkg.Description.Metadata.UserDefined
	if md["com.anemll.lut_bits"] != "4" {
		t.Errorf("lut_bits %q", md["com.anemll.lut_bits"])
	}
	// k/v projections (32×64 = 2048 elements) stay dense, as coremltools does.
	if want := "model_model_layers_0_self_attn_k_proj_weight_to_fp16,model_model_layers_0_self_attn_v_proj_weight_to_fp16"; md["com.anemll-go.dense_weights"] != want {
		t.Errorf("dense_weights %q, want %q", md["com.anemll-go.dense_weights"], want)
	}
	op := findOp(f, "model_model_layers_0_mlp_up_proj_weight_to_fp16_palettized")
	if op == nil || op.Type != "constexpr_lut_to_dense" {
		t.Fatal("up_proj is not palettized")
	}
	if conv := findOp(f, "layers_0_up"); conv.Input("weight")[0].Name != op.Name {
		t.Error("conv does not use the palettized weight")
	}
	idxV, lutV := op.Input("indices")[0].Value, op.Input("lut")[0].Value
	if idxV == nil || lutV == nil || idxV.Type.DType != mil.UInt4 || !equalShape(idxV.Type.Shape, []int64{128, 64, 1, 1}) ||
		!equalShape(lutV.Type.Shape, []int64{16, 1, 1, 1, 16, 1}) {
		t.Fatalf("literals %+v %+v", idxV, lutV)
	}
	if ty := op.Outputs[0].Type; ty.DType != mil.Float16 || !equalShape(ty.Shape, []int64{128, 64, 1, 1}) {
		t.Errorf("dense type %s", ty)
	}
	w, _, err := ckpt.Float16("model.layers.0.mlp.up_proj.weight")
	if err != nil {
		t.Fatal(err)
	}
	wantIdx, wantLUT, _ := evenPalette(w, []int64{128, 64, 1, 1}, 4, 8)
	gotIdx, err := bitpack.Unpack(nil, valueBytes(t, idxV), 128*64, 4)
	if err != nil || !bytes.Equal(gotIdx, wantIdx) {
		t.Errorf("indices differ from the palettizer's (%v)", err)
	}
	if !bytes.Equal(valueBytes(t, lutV), halfBytes(wantLUT)) {
		t.Error("LUT differs from the palettizer's")
	}
	// Embeddings (gather) and LM head use their own widths.
	emb := mainFn(build(t, c, arch.PartEmbeddings, 0))
	if op := findOp(emb, "embed_tokens_weight_to_fp16_palettized"); op == nil || op.Input("indices")[0].Value.Type.DType != mil.UInt8 {
		t.Error("embeddings not palettized at 8 bits")
	}
	lm := build(t, c, arch.PartLMHead, 0)
	if n := histogram(mainFn(lm))["constexpr_lut_to_dense"]; n != 8 {
		t.Errorf("LM head: %d palettized parts, want 8", n)
	}
	if lm.Description.Metadata.UserDefined["com.anemll.lut_bits"] != "6" {
		t.Error("LM head lut_bits")
	}
	// fp16 parts carry no LUT keys.
	c16 := newConv(t, cfg, ckpt, Options{ContextLength: 256, StateLength: 512})
	ud := build(t, c16, arch.PartFFN, 0).Description.Metadata.UserDefined
	if _, ok := ud["com.anemll.lut_bits"]; ok {
		t.Error("fp16 package has lut_bits")
	}
	if _, ok := ud["com.anemll-go.dense_weights"]; ok {
		t.Error("fp16 package has dense_weights")
	}
}

func TestLUTPairReleases(t *testing.T) {
	calls := 0
	p := &lutPair{compute: func() ([]byte, []byte, error) {
		calls++
		return []byte{1, 2}, []byte{3, 4, 5}, nil
	}}
	a, _ := p.take(false)
	b, _ := p.take(true)
	if calls != 1 || !bytes.Equal(a, []byte{1, 2}) || !bytes.Equal(b, []byte{3, 4, 5}) {
		t.Fatalf("calls %d, got %v %v", calls, a, b)
	}
	if p.idx != nil || p.lut != nil {
		t.Error("palette kept after both halves were taken")
	}
	// Asked again (e.g. a second writer pass): recomputed, not lost.
	if a, _ = p.take(true); calls != 2 || !bytes.Equal(a, []byte{3, 4, 5}) {
		t.Errorf("second take: calls %d, %v", calls, a)
	}
}

func TestOverflowReported(t *testing.T) {
	o := small()
	o.Layers = 1
	o.DType = hf.F32
	dir := t.TempDir()
	cj, err := synth.ConfigJSON(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := synth.Tensors(o)
	for i, tt := range ts {
		if tt.Name == "model.layers.0.mlp.up_proj.weight" {
			orig := tt.Data
			ts[i].Data = func(w io.Writer) error {
				var buf bytes.Buffer
				if err := orig(&buf); err != nil {
					return err
				}
				b := buf.Bytes()
				for _, k := range []int{0, 5, 17} {
					binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(70000))
				}
				_, err := w.Write(b)
				return err
			}
		}
	}
	if err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts); err != nil {
		t.Fatal(err)
	}
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ckpt, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ckpt.Close()
	var mu sync.Mutex
	reported := map[string]int{}
	count := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range reported {
			n += v
		}
		return n
	}
	c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4, OnOverflow: func(w string, n int) {
		mu.Lock()
		reported[w] += n
		mu.Unlock()
	}})
	f := mainFn(build(t, c, arch.PartFFN, 0))
	if count() != 0 {
		t.Fatal("weights converted before they were asked for")
	}
	valueBytes(t, findOp(f, milName("model.layers.0.mlp.up_proj.weight")).ConstValue())
	if count() != 3 || reported["model.layers.0.mlp.up_proj.weight"] != 3 || len(reported) != 1 {
		t.Errorf("overflow count %d, reported %v; want 3 for up_proj", count(), reported)
	}
}

func printProgram(t testing.TB, p *mil.Program) string {
	t.Helper()
	var sb strings.Builder
	if err := mil.Print(&sb, p); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func TestDeterministicAndShared(t *testing.T) {
	cfg, ckpt := synthModel(t, small())
	opts := Options{ContextLength: 32, BatchSize: 8, NumChunks: 2, LUT: LUTBits{FFN: 4}, Palettize: testPalettize, Eligible: quant.Eligible}
	a, b := newConv(t, cfg, ckpt, opts), newConv(t, cfg, ckpt, opts)
	for _, p := range arch.Parts {
		for i := 0; i < 2; i++ {
			pa, pb := build(t, a, p, i), build(t, b, p, i)
			if printProgram(t, pa.Program) != printProgram(t, pb.Program) {
				t.Errorf("%s chunk %d: two builds differ", p, i)
			}
		}
	}
	// The combined package's functions share weight values (one blob each).
	pkg := build(t, a, arch.PartFFNPF, 1)
	if fs := pkg.Program.FunctionNames(); len(fs) != 2 || fs[0] != "infer" || fs[1] != "prefill" || pkg.Description.DefaultFunction != "infer" {
		t.Fatalf("functions %v default %q", fs, pkg.Description.DefaultFunction)
	}
	// Each function's lazy (weight) values, by the op that uses them.
	uses := make([]map[*mil.Value]string, 2)
	for fi, f := range pkg.Program.Functions {
		uses[fi] = map[*mil.Value]string{}
		for _, op := range f.Body.Ops {
			if v := op.ConstValue(); v != nil && v.Source != nil {
				uses[fi][v] = op.Name
			}
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					if a.Value != nil && a.Value.Source != nil {
						uses[fi][a.Value] = op.Name + "." + in.Param
					}
				}
			}
		}
	}
	// Chunk 2 of 2 holds layers 3..4; prefill skips layer 4's MLP and the
	// final norm, so every prefill weight is infer's too (one value, one
	// blob) and infer alone has exactly those.
	for v, name := range uses[1] {
		if _, ok := uses[0][v]; !ok {
			t.Errorf("prefill weight %s is not shared with infer", name)
		}
	}
	var only []string
	for v, name := range uses[0] {
		if _, ok := uses[1][v]; !ok {
			only = append(only, name)
		}
	}
	slices.Sort(only)
	// (The MLP matrices are 2048 elements, under the LUT threshold: dense.)
	want := []string{
		"model_model_layers_4_mlp_down_proj_weight_to_fp16", "model_model_layers_4_mlp_gate_proj_weight_to_fp16",
		"model_model_layers_4_mlp_up_proj_weight_to_fp16",
		"model_model_layers_4_post_attention_layernorm_weight_to_fp16", "model_model_norm_weight_to_fp16",
	}
	if !slices.Equal(only, want) {
		t.Errorf("weights only infer uses:\n got %q\nwant %q", only, want)
	}
}

// TestWarnMisfit checks the warning for weights that stay fp16 because
// their output channels are not a multiple of the LUT group size: named
// once per weight across parts (the prefill chunk repeats the decode
// chunk's weights), summed up after maxMisfitLines, and silent for weights
// under coremltools' size threshold and for group sizes that divide.
func TestWarnMisfit(t *testing.T) {
	tinyCfg, tinyCkpt := loadTiny(t) // hidden 64, intermediate 128; k/v 32×64 are under the threshold
	one := small()
	one.Hidden, one.Intermediate, one.Layers = 64, 128, 1
	oneCfg, oneCkpt := synthModel(t, one)
	misfit := func(name string, rows int) string {
		return fmt.Sprintf("warning: model.layers.0.%s.weight stays fp16: its %d output channels are not a multiple of the LUT group size 128 (choose a group size that divides them)", name, rows)
	}
	for _, tc := range []struct {
		name  string
		cfg   *hf.Config
		ckpt  *hf.Checkpoint
		group int
		want  []string
	}{
		{"group 8 divides every weight", tinyCfg, tinyCkpt, 8, nil},
		{"group 128 divides gate/up's 128 rows only", tinyCfg, tinyCkpt, 128, []string{
			misfit("self_attn.q_proj", 64), misfit("self_attn.o_proj", 64), misfit("mlp.down_proj", 64),
			"warning: more weights stay fp16 for the same reason (anemll inspect lists them per package)",
		}},
		// One layer: three misfits in the decode chunk, q/o again in the
		// prefill chunk, which must not be named twice.
		{"one layer, group 128", oneCfg, oneCkpt, 128, []string{
			misfit("self_attn.q_proj", 64), misfit("self_attn.o_proj", 64), misfit("mlp.down_proj", 64),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			c := newConv(t, tc.cfg, tc.ckpt, Options{ContextLength: 64, BatchSize: 16, NumChunks: 1, LUT: LUTBits{FFN: 4},
				LUTGroups: LUTGroups{FFN: tc.group}, Palettize: testPalettize, Eligible: quant.Eligible,
				Warn: func(m string) { got = append(got, m) }})
			build(t, c, arch.PartFFN, 0)
			build(t, c, arch.PartPrefill, 0)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
