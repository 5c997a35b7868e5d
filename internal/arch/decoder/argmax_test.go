package decoder

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/runtime"
)

// TestArgmaxHead builds the LM head with and without Options.Argmax for a
// vocabulary the split does not divide (1001 tokens in 8 splits of 126,
// the last padded with 7 rows of −Inf) and checks on random hidden states
// that argmax_idx/argmax_val are exactly each split's first largest logit
// and its value, that a padded row never wins, and the interface and
// metadata ANEMLL 0.3.5 uses.
func TestArgmaxHead(t *testing.T) {
	o := small()
	o.Vocab = 1001
	cfg, ckpt := synthModel(t, o)
	plain := newConv(t, cfg, ckpt, Options{SplitLMHead: 8})
	am := newConv(t, cfg, ckpt, Options{SplitLMHead: 8, Argmax: true})
	if got, want := am.LMHeadChunkSizes(), []int{126, 126, 126, 126, 126, 126, 126, 119}; !slices.Equal(got, want) {
		t.Fatalf("LMHeadChunkSizes = %v, want %v", got, want)
	}
	pkg := build(t, am, arch.PartLMHead, 0)
	d := pkg.Description
	if len(d.Outputs) != 2 || d.Outputs[0].Name != "argmax_idx" || d.Outputs[0].DType != mil.Int32 || !slices.Equal(d.Outputs[0].Shape, []int64{8}) ||
		d.Outputs[1].Name != "argmax_val" || d.Outputs[1].DType != mil.Float16 || !slices.Equal(d.Outputs[1].Shape, []int64{8}) {
		t.Fatalf("outputs %+v", d.Outputs)
	}
	md := d.Metadata.UserDefined
	if md["com.anemll.argmax_in_model"] != "true" || md["com.anemll.vocab_size"] != "1001" ||
		md["com.anemll.lm_head_chunk_sizes"] != "126,126,126,126,126,126,126,119" {
		t.Errorf("metadata %v", md)
	}
	if _, ok := build(t, plain, arch.PartLMHead, 0).Description.Metadata.UserDefined["com.anemll.argmax_in_model"]; ok {
		t.Errorf("the logits head claims argmax_in_model")
	}
	fa := load(t, am, arch.PartLMHead, 0, "main")
	fl := load(t, plain, arch.PartLMHead, 0, "main")
	r := rand.New(rand.NewPCG(3, 4))
	wins := map[int]bool{}
	for trial := 0; trial < 50; trial++ {
		h := make([]float32, cfg.HiddenSize)
		for i := range h {
			h[i] = float32(r.NormFloat64() * 3)
		}
		in := map[string]*runtime.Tensor{"hidden_states": runtime.NewFloat16([]int{1, 1, cfg.HiddenSize}, h)}
		oa, err := fa.Predict(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		ol, err := fl.Predict(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		vals := oa["argmax_val"].Float32s()
		idx := oa["argmax_idx"].I
		best, bestV := 0, float32(math.Inf(-1))
		for k := 0; k < 8; k++ {
			l := ol["logits"+string(rune('1'+k))].Float32s()
			j := 0
			for i, v := range l {
				if v > l[j] {
					j = i
				}
			}
			if int(idx[k]) != j || vals[k] != l[j] {
				t.Fatalf("trial %d split %d: argmax (%d, %g), logits say (%d, %g)", trial, k, idx[k], vals[k], j, l[j])
			}
			if k == 7 && j >= 119 {
				t.Fatalf("a padded row won split 8")
			}
			if vals[k] > bestV {
				best, bestV = k*126+j, vals[k]
			}
		}
		wins[best/126] = true
	}
	if len(wins) < 3 {
		t.Errorf("winners fell in only %d splits; the test does not exercise the offsets", len(wins))
	}
}

// TestMonolithicMatchesParts runs the monolithic decode function and the
// separate parts (embeddings → one FFN chunk → LM head) on the same tokens
// and checks that the logits and the KV cache are bit-identical: the
// monolithic function is the parts assembled, nothing recomputed.
func TestMonolithicMatchesParts(t *testing.T) {
	cfg, ckpt := synthModel(t, small())
	c := newConv(t, cfg, ckpt, Options{ContextLength: 16, BatchSize: 4})
	mono := load(t, c, arch.PartMonolithic, 0, "main")
	emb := load(t, c, arch.PartEmbeddings, 0, "main")
	ffn := load(t, c, arch.PartFFN, 0, "main")
	head := load(t, c, arch.PartLMHead, 0, "main")
	sm, sp := mono.NewState(), ffn.NewState()
	for pos, id := range []int{3, 17, 95, 0, 42, 42, 7} {
		p := runtime.NewInt32([]int{1}, []int32{int32(pos)})
		mask := runtime.NewFloat16([]int{1, 1, 1, 16}, maskRows(16, pos))
		ids := runtime.NewInt32([]int{1, 1}, []int32{int32(id)})
		om, err := mono.Predict(map[string]*runtime.Tensor{"input_ids": ids, "position_ids": p, "causal_mask": mask, "current_pos": p}, sm)
		if err != nil {
			t.Fatal(err)
		}
		e, err := emb.Predict(map[string]*runtime.Tensor{"input_ids": ids}, nil)
		if err != nil {
			t.Fatal(err)
		}
		x, err := ffn.Predict(map[string]*runtime.Tensor{"hidden_states": e["hidden_states"], "position_ids": p, "causal_mask": mask, "current_pos": p}, sp)
		if err != nil {
			t.Fatal(err)
		}
		ol, err := head.Predict(map[string]*runtime.Tensor{"hidden_states": x["output_hidden_states"]}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k := 1; k <= c.Options().SplitLMHead; k++ {
			n := "logits" + string(rune('0'+k))
			if !slices.Equal(om[n].Float32s(), ol[n].Float32s()) {
				t.Fatalf("pos %d: %s differs", pos, n)
			}
		}
	}
	if !slices.Equal(sm.Tensor(StateName).F, sp.Tensor(StateName).F) {
		t.Errorf("KV caches differ")
	}
	if _, err := c.Monolithic(true); err != nil {
		t.Fatal(err)
	}
	two := newConv(t, cfg, ckpt, Options{NumChunks: 2})
	if _, err := two.Monolithic(false); err == nil {
		t.Errorf("a two-chunk converter built a monolithic model")
	}
}

// TestLMHeadRowsRoundedForLUT: a vocabulary whose even split is not a
// multiple of the LUT group (1001 tokens in 8 parts of 126 rows, group 8)
// gets parts of 128 rows when the LM head is palettized, so every part
// takes the LUT instead of staying fp16; the chunk sizes still count the
// real rows, the padding logits are −Inf and the real ones finite. Without
// a LUT the parts stay 126 rows, and a rounding that would leave the last
// part no real row (100 tokens: 13 → 16 rows) is not made.
func TestLMHeadRowsRoundedForLUT(t *testing.T) {
	o := small()
	o.Vocab = 1001
	cfg, ckpt := synthModel(t, o)
	lut := Options{SplitLMHead: 8, LUT: LUTBits{LMHead: 6}, Palettize: testPalettize, Eligible: quant.Eligible}
	c := newConv(t, cfg, ckpt, lut)
	if got := c.lmPartRows(); got != 128 {
		t.Fatalf("rows per part with LUT6 = %d, want 128", got)
	}
	if got, want := c.LMHeadChunkSizes(), []int{128, 128, 128, 128, 128, 128, 128, 105}; !slices.Equal(got, want) {
		t.Errorf("LMHeadChunkSizes = %v, want %v", got, want)
	}
	pkg := build(t, c, arch.PartLMHead, 0)
	if n := histogram(mainFn(pkg))["constexpr_lut_to_dense"]; n != 8 {
		t.Errorf("%d palettized parts, want 8", n)
	}
	if d := pkg.Description.Metadata.UserDefined["com.anemll-go.dense_weights"]; d != "" {
		t.Errorf("weights left fp16: %s", d)
	}
	f := load(t, c, arch.PartLMHead, 0, "main")
	h := make([]float32, cfg.HiddenSize)
	for i := range h {
		h[i] = float32(i%7) - 3
	}
	out, err := f.Predict(map[string]*runtime.Tensor{"hidden_states": runtime.NewFloat16([]int{1, 1, cfg.HiddenSize}, h)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	last := out["logits8"].Float32s()
	if len(last) != 128 {
		t.Fatalf("logits8 has %d values, want 128", len(last))
	}
	for j, v := range last {
		if pad := j >= 105; math.IsInf(float64(v), -1) != pad || !pad && (math.IsInf(float64(v), 0) || math.IsNaN(float64(v))) {
			t.Errorf("logits8[%d] = %v", j, v)
		}
	}
	if got := newConv(t, cfg, ckpt, Options{SplitLMHead: 8}).lmPartRows(); got != 126 {
		t.Errorf("rows per part without a LUT = %d, want 126", got)
	}
	o.Vocab = 32001 // a fine-tune's added token: 8 splits of 4001 rows become 4008
	cfg, ckpt = synthModel(t, o)
	if got := newConv(t, cfg, ckpt, lut).lmPartRows(); got != 4008 {
		t.Errorf("32001 tokens in 8 parts with LUT6: %d rows per part, want 4008", got)
	}
	o.Vocab = 100
	cfg, ckpt = synthModel(t, o)
	if got := newConv(t, cfg, ckpt, lut).lmPartRows(); got != 13 {
		t.Errorf("100 tokens in 8 parts with LUT6: %d rows per part, want 13 (16 would empty the last part)", got)
	}
}
