package calib

import (
	"errors"
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

func TestDocuments(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a\n%\nb\nc\n%\n", []string{"a", "b\nc"}},
		{"\n\na\n\n%\n%\n\tb \n%", []string{"a", "\tb "}},
		{"plain text\nwith lines\n", []string{"plain text\nwith lines"}},
		{"a\r\n%\r\nb\r\n", []string{"a", "b"}},
		{"x %\n%%\n", []string{"x %\n%%"}},
		{"%\n%\n", nil},
	}
	for _, tc := range tests {
		if got := Documents(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Documents(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTokenizeTinyTexts(t *testing.T) {
	m := loadTiny(t)
	bos, _ := m.tok.BOS()
	eos := m.tok.EOS()[0]
	for _, tc := range []struct {
		file         string
		docs, tokens int
	}{
		// Counts from the text README: 400 and 40 fortunes, about 33,000
		// and 3,900 tokens with BOS and EOS per fortune.
		{"calibration.txt", 400, 32971},
		{"dev.txt", 40, 3924},
	} {
		ids := m.ids(t, tc.file)
		var nb, ne int
		for i, id := range ids {
			if id == bos {
				nb++
				if i > 0 && ids[i-1] != eos {
					t.Errorf("%s: BOS at %d not after an EOS", tc.file, i)
				}
			}
			if id == eos {
				ne++
			}
		}
		if len(ids) != tc.tokens || nb != tc.docs || ne != tc.docs || ids[0] != bos || ids[len(ids)-1] != eos {
			t.Errorf("%s: %d tokens, %d BOS, %d EOS; want %d tokens and %d fortunes each BOS…EOS", tc.file, len(ids), nb, ne, tc.tokens, tc.docs)
		}
	}
}

func TestReadTextErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ name, path string }{
		{"empty", write("empty.txt", nil)},
		{"blank", write("blank.txt", []byte("\n \n\t\n"))},
		{"not UTF-8", write("latin1.txt", []byte("caf\xe9\n"))},
		{"missing", filepath.Join(dir, "nope.txt")},
	} {
		_, err := ReadText(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.path) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s", tc.name, err, tc.path)
		}
	}
	txt, err := ReadText(filepath.Join(tinyText, "dev.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(txt.SHA256) != 64 {
		t.Errorf("SHA-256 %q", txt.SHA256)
	}
}

func TestCollectTiny(t *testing.T) {
	m := loadTiny(t)
	cal := m.ids(t, "calibration.txt")
	if _, err := Collect(m.ref, cal[:255], Options{ContextLength: 256}); !errors.Is(err, ErrTooShort) {
		t.Errorf("255 tokens at context 256: %v, want ErrTooShort", err)
	}
	if _, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: 100}); !errors.Is(err, ErrTooShort) {
		t.Errorf("--calibration-tokens 100 at context 256: %v, want ErrTooShort", err)
	}
	set, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if set.Tokens != 768 || set.Sequences != 3 {
		t.Errorf("%d tokens in %d sequences, want 768 in 3 (whole sequences only)", set.Tokens, set.Sequences)
	}
	if set.Len() != 4*7+1 {
		t.Errorf("%d weights with statistics, want 29", set.Len())
	}
	// Shared inputs share statistics.
	for l := range 4 {
		p := fmt.Sprintf("model.layers.%d.", l)
		q := set.Stats(p + "self_attn.q_proj.weight")
		if set.Stats(p+"self_attn.k_proj.weight") != q || set.Stats(p+"self_attn.v_proj.weight") != q ||
			set.Stats(p+"mlp.up_proj.weight") != set.Stats(p+"mlp.gate_proj.weight") || q == set.Stats(p+"self_attn.o_proj.weight") {
			t.Errorf("layer %d: statistics not shared as the inputs are", l)
		}
	}
	// H is the Gram matrix of the rows the observer sees, recomputed here
	// independently for two inputs.
	want := map[string][]float64{"model.layers.2.mlp.down_proj.weight": nil, "lm_head.weight": nil}
	m.ref.Observe(func(name string, x []float32) {
		g, ok := want[name]
		if !ok {
			return
		}
		n := len(x)
		if g == nil {
			g = make([]float64, n*n)
			want[name] = g
		}
		for i := range n {
			for j := range n {
				g[i*n+j] += float64(x[i]) * float64(x[j])
			}
		}
	})
	for q := range 3 {
		if _, err := m.ref.Forward(cal[q*256 : (q+1)*256]); err != nil {
			t.Fatal(err)
		}
	}
	m.ref.Observe(nil)
	for name, g := range want {
		st := set.Stats(name)
		n := st.In()
		if len(st.Gram) != n*n || len(g) != n*n {
			t.Fatalf("%s: Gram %d values, want %d", name, len(st.Gram), n*n)
		}
		for i := range n {
			if st.Diag[i] != st.Gram[i*n+i] {
				t.Fatalf("%s: diag %d differs from the Gram diagonal", name, i)
			}
			for j := range n {
				if d := math.Abs(st.Gram[i*n+j] - g[i*n+j]); d > 1e-9*(math.Abs(g[i*n+j])+1) {
					t.Fatalf("%s: H[%d][%d] = %g, want %g", name, i, j, st.Gram[i*n+j], g[i*n+j])
				}
			}
		}
	}
	// Diagonal only above the width limit.
	small, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: 256, Full: func(in int) bool { return in <= 200 }})
	if err != nil {
		t.Fatal(err)
	}
	if small.Stats("model.layers.0.mlp.down_proj.weight").Gram != nil || small.Stats("model.layers.0.mlp.up_proj.weight").Gram == nil {
		t.Error("full Gram up to 200 wide: want a diagonal for the 384-wide down_proj input and a full H for the 128-wide ones")
	}
	// Deterministic.
	again, err := Collect(m.ref, cal, Options{ContextLength: 256, Tokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lm_head.weight", "model.layers.3.self_attn.o_proj.weight"} {
		if !slices.Equal(again.Stats(name).Gram, set.Stats(name).Gram) {
			t.Errorf("%s: a second run gave different statistics", name)
		}
	}
}

func TestForRequests(t *testing.T) {
	m := loadTiny(t)
	set, err := Collect(m.ref, m.ids(t, "calibration.txt"), Options{ContextLength: 256, Tokens: 256})
	if err != nil {
		t.Fatal(err)
	}
	head := set.Stats("lm_head.weight")
	tests := []struct {
		name string
		req  quant.Request
		want *quant.Stats // nil: an error
	}{
		{"head split", quant.Request{Name: "lm_head.weight", Row0: 128, Row1: 256, Weights: make([]uint16, 128*128), Shape: []int64{128, 128, 1, 1}}, head},
		{"padded head split", quant.Request{Name: "lm_head.weight", Row0: 896, Row1: 1024, Weights: make([]uint16, 136*128), Shape: []int64{136, 128, 1, 1}}, head},
		{"tied head", quant.Request{Name: "model.embed_tokens.weight", Row0: 0, Row1: 128, Weights: make([]uint16, 128*128), Shape: []int64{128, 128, 1, 1}}, head},
		{"conv weight", quant.Request{Name: "model.layers.1.mlp.down_proj.weight", Weights: make([]uint16, 128*384), Shape: []int64{128, 384, 1, 1}}, set.Stats("model.layers.1.mlp.down_proj.weight")},
		{"unknown", quant.Request{Name: "model.layers.9.mlp.down_proj.weight", Weights: make([]uint16, 128*384), Shape: []int64{128, 384}}, nil},
		{"wrong width", quant.Request{Name: "lm_head.weight", Weights: make([]uint16, 1024*64), Shape: []int64{1024, 64}}, nil},
	}
	for _, tc := range tests {
		got, err := set.For(tc.req)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %p, %v; want the statistics %p", tc.name, got, err, tc.want)
		}
	}
	emb, err := set.For(quant.Request{Name: "model.embed_tokens.weight", Weights: make([]uint16, 1024*128), Shape: []int64{1024, 128}})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range emb.RowWeight {
		sum += f
	}
	// 256 tokens counted, plus one for each of the 1024 rows.
	if len(emb.RowWeight) != 1024 || sum != 256+1024 || emb.Gram != nil || emb.Diag[0] != 1 {
		t.Errorf("embedding statistics: %d row weights summing to %g", len(emb.RowWeight), sum)
	}
}

// TestCalibratedNeverWorseTiny palettizes every FFN-part matrix and the LM
// head of the tiny model, calibrated on calibration.txt (4096 tokens,
// context 256), and checks on those statistics that no group and so no
// layer comes out with a larger output error than the uncalibrated
// palette, and that the whole model's output error falls by a clear
// margin (measured ratios are logged).
func TestCalibratedNeverWorseTiny(t *testing.T) {
	m := loadTiny(t)
	set, err := Collect(m.ref, m.ids(t, "calibration.txt"), Options{ContextLength: 256})
	if err != nil {
		t.Fatal(err)
	}
	for _, bits := range []int{2, 3, 4, 6} {
		_, reps := palettizeTiny(t, m, set, bits, bits)
		var tot quant.CalibReport
		for name, r := range reps {
			tot.Add(r)
			for g := range r.Groups {
				if r.Groups[g] > r.Groups0[g] {
					t.Errorf("%d bits, %s group %d: calibrated error %g above uncalibrated %g", bits, name, g, r.Groups[g], r.Groups0[g])
				}
			}
			if !(r.Output <= r.Output0) || !(r.OutputRef > 0) {
				t.Errorf("%d bits, %s: output error %g → %g (ref %g)", bits, name, r.Output0, r.Output, r.OutputRef)
			}
			if !(r.Output < 0.9*r.Output0) {
				t.Errorf("%d bits, %s: output error only %g → %g", bits, name, r.Output0, r.Output)
			}
		}
		t.Logf("%d bits: %d weights, output error / energy %.4g → %.4g (×%.3f), weight SSE %.4g → %.4g",
			bits, len(reps), tot.Output0/tot.OutputRef, tot.Output/tot.OutputRef, tot.Output/tot.Output0, tot.Weight0, tot.Weight)
	}
}
