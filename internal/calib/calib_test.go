package calib

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/tokenizer"
)

const (
	tinyModel = "../../testdata/tiny-llama-fortunes/bf16"
	tinyText  = "../../testdata/tiny-llama-fortunes/text"
)

type tiny struct {
	cfg *hf.Config
	ck  *hf.Checkpoint
	tok *tokenizer.Tokenizer
	ref *reference.Model
}

func loadTiny(t testing.TB) *tiny {
	t.Helper()
	cfg, err := hf.LoadConfig(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	tok, err := tokenizer.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reference.New(cfg, reference.CheckpointWeights(ck))
	if err != nil {
		t.Fatal(err)
	}
	return &tiny{cfg, ck, tok, ref}
}

func (m *tiny) ids(t testing.TB, file string) []int {
	t.Helper()
	txt, err := ReadText(filepath.Join(tinyText, file))
	if err != nil {
		t.Fatal(err)
	}
	return Tokenize(m.tok, string(txt.Data))
}

// quantWeights serves the checkpoint with some tensors replaced.
type quantWeights struct {
	base reference.Weights
	repl map[string][]float32
}

func (q quantWeights) Tensor(name string) ([]float32, []int64, error) {
	d, s, err := q.base.Tensor(name)
	if r, ok := q.repl[name]; ok && err == nil {
		return r, s, nil
	}
	return d, s, err
}

// palettizeTiny palettizes the FFN-part matrices at ffn bits and the LM
// head at head bits, calibrated on set (nil: uncalibrated), and returns
// the replaced tensors and the summed reports.
func palettizeTiny(t testing.TB, m *tiny, set *Set, ffn, head int) (map[string][]float32, map[string]*quant.CalibReport) {
	t.Helper()
	repl := map[string][]float32{}
	reps := map[string]*quant.CalibReport{}
	do := func(name string, bits int) {
		w, _, err := m.ck.Float16(name)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := m.ck.Info(name)
		req := quant.Request{Name: name, Weights: w, Shape: info.Shape, Bits: bits, GroupSize: 8}
		if set != nil {
			if req.Stats, err = set.For(req); err != nil {
				t.Fatal(err)
			}
		}
		p, rep, err := quant.PalettizeRequest(req, quant.Options{})
		if err != nil {
			t.Fatal(err)
		}
		reps[name] = rep
		d := p.Dense()
		f := make([]float32, len(d))
		for i, h := range d {
			f[i] = fp16.Bits(h).Float32()
		}
		repl[name] = f
	}
	for l := range m.cfg.NumHiddenLayers {
		for _, s := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} {
			if ffn > 0 {
				do(fmt.Sprintf("model.layers.%d.%s.weight", l, s), ffn)
			}
		}
	}
	if head > 0 {
		do("lm_head.weight", head)
	}
	return repl, reps
}

// klOn returns mean KL(ref ‖ quantized) and top-1 agreement over windows.
func klOn(t testing.TB, m *tiny, repl map[string][]float32, ids []int, window int) (meanKL, top1 float64) {
	t.Helper()
	q, err := reference.New(m.cfg, quantWeights{reference.CheckpointWeights(m.ck), repl})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var kl, agree float64
	for s := 0; s < len(ids); s += window {
		seq := ids[s:min(s+window, len(ids))]
		var want, got [][]float32
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); want, _ = m.ref.Forward(seq) }()
		go func() { defer wg.Done(); got, _ = q.Forward(seq) }()
		wg.Wait()
		for p := range seq {
			kl += klDiv(want[p], got[p])
			if argmax(want[p]) == argmax(got[p]) {
				agree++
			}
			n++
		}
	}
	return kl / float64(n), agree / float64(n)
}

func argmax(x []float32) int {
	b := 0
	for i, v := range x {
		if v > x[b] {
			b = i
		}
	}
	return b
}

func klDiv(p, q []float32) float64 {
	ls := func(x []float32) []float64 {
		mx := math.Inf(-1)
		for _, v := range x {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range x {
			s += math.Exp(float64(v) - mx)
		}
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = float64(v) - mx - math.Log(s)
		}
		return out
	}
	lp, lq := ls(p), ls(q)
	var kl float64
	for i := range lp {
		kl += math.Exp(lp[i]) * (lp[i] - lq[i])
	}
	return kl
}

// TestExperiment is a development aid (ANEMLL_CALIB_EXPERIMENT=1).
func TestExperiment(t *testing.T) {
	if os.Getenv("ANEMLL_CALIB_EXPERIMENT") == "" {
		t.Skip("set ANEMLL_CALIB_EXPERIMENT=1")
	}
	m := loadTiny(t)
	cal := m.ids(t, "calibration.txt")
	dev := m.ids(t, "dev.txt")
	t.Logf("calibration %d tokens, dev %d tokens", len(cal), len(dev))
	tokens := 8192
	fmt.Sscan(os.Getenv("ANEMLL_CALIB_TOKENS"), &tokens)
	set, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	configs := [][2]int{{4, 6}, {6, 6}, {3, 6}, {2, 6}}
	if os.Getenv("ANEMLL_CALIB_QUICK") != "" {
		configs = configs[:1]
	}
	for _, c := range configs {
		var line strings.Builder
		seq, err := CollectSequential(m.cfg, m.ck, cal, Options{ContextLength: 256, Tokens: tokens}, planFor(c[0], c[1]))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Set{nil, set, seq} {
			repl, reps := palettizeTiny(t, m, s, c[0], c[1])
			kl, top := klOn(t, m, repl, dev, 256)
			var tot quant.CalibReport
			for _, r := range reps {
				if r != nil {
					tot.Add(r)
				}
			}
			fmt.Fprintf(&line, "  | KL %.4g top1 %.2f%% (out err %.3g→%.3g)", kl, 100*top, tot.Output0/tot.OutputRef, tot.Output/tot.OutputRef)
		}
		t.Logf("LUT%d/LUT%d:%s", c[0], c[1], line.String())
	}
}

func planFor(ffn, head int) Plan {
	return Plan{Bits: func(name string) int {
		if name == "lm_head.weight" {
			return head
		}
		if _, ok := layerOf(name); ok {
			return ffn
		}
		return 0
	}}
}

func TestExperimentLayers(t *testing.T) {
	if os.Getenv("ANEMLL_CALIB_EXPERIMENT") == "" {
		t.Skip("set ANEMLL_CALIB_EXPERIMENT=1")
	}
	m := loadTiny(t)
	cal := m.ids(t, "calibration.txt")
	set, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: 8192})
	if err != nil {
		t.Fatal(err)
	}
	_, reps := palettizeTiny(t, m, set, 4, 6)
	for _, name := range sortedKeys(reps) {
		r := reps[name]
		t.Logf("%-40s rel out err %.3g → %.3g (×%.2f)  weight %.3g → %.3g", name, r.Output0/r.OutputRef, r.Output/r.OutputRef, r.Output/r.Output0, r.Weight0, r.Weight)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

func TestExperimentRowWeights(t *testing.T) {
	if os.Getenv("ANEMLL_CALIB_EXPERIMENT") == "" {
		t.Skip("set ANEMLL_CALIB_EXPERIMENT=1")
	}
	m := loadTiny(t)
	cal := m.ids(t, "calibration.txt")
	dev := m.ids(t, "dev.txt")
	set, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: 8192})
	if err != nil {
		t.Fatal(err)
	}
	L := m.cfg.NumHiddenLayers
	norm := func(name string) []float32 {
		d, err := m.ck.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for l := range L {
		for _, w := range []string{"self_attn.o_proj", "mlp.down_proj"} {
			var norms [][]float32
			if w == "self_attn.o_proj" {
				norms = append(norms, norm(fmt.Sprintf("model.layers.%d.post_attention_layernorm.weight", l)))
			}
			for k := l + 1; k < L; k++ {
				norms = append(norms, norm(fmt.Sprintf("model.layers.%d.input_layernorm.weight", k)), norm(fmt.Sprintf("model.layers.%d.post_attention_layernorm.weight", k)))
			}
			norms = append(norms, norm("model.norm.weight"))
			h := m.cfg.HiddenSize
			rw := make([]float64, h)
			var tot float64
			for c := range h {
				for _, g := range norms {
					rw[c] += float64(g[c]) * float64(g[c])
				}
				tot += rw[c]
			}
			for c := range rw {
				rw[c] *= float64(h) / tot
			}
			name := fmt.Sprintf("model.layers.%d.%s.weight", l, w)
			st := set.stats[name]
			set.stats[name] = &quant.Stats{Diag: st.Diag, Gram: st.Gram, RowWeight: rw}
		}
	}
	repl, _ := palettizeTiny(t, m, set, 4, 6)
	kl, top := klOn(t, m, repl, dev, 256)
	t.Logf("row-weighted o/down: KL %.4g top1 %.2f%%", kl, 100*top)
}
