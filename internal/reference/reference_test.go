package reference_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
)

// The tiny trained model lives in internal/hf's testdata (see its README).
var tinyDir = filepath.Join("..", "..", "testdata", "tiny-llama-fortunes")

func loadTiny(t testing.TB, sub string) *reference.Model {
	t.Helper()
	dir := filepath.Join(tinyDir, sub)
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close() // New copies the weights out
	m, err := reference.New(cfg, reference.CheckpointWeights(ck))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type golden struct {
	Entries []struct {
		File      string `json:"file"`
		PromptIDs []int  `json:"prompt_ids"`
		Shape     []int  `json:"shape"`
		ArgmaxIDs []int  `json:"argmax_ids"`
	} `json:"entries"`
}

func readGolden(t *testing.T) (golden, [][]float32) {
	t.Helper()
	var g golden
	b, err := os.ReadFile(filepath.Join(tinyDir, "golden", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	var logits [][]float32
	for _, e := range g.Entries {
		raw, err := os.ReadFile(filepath.Join(tinyDir, "golden", e.File))
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != 4*e.Shape[0]*e.Shape[1] {
			t.Fatalf("%s: %d bytes for shape %v", e.File, len(raw), e.Shape)
		}
		v := make([]float32, len(raw)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		logits = append(logits, v)
	}
	return g, logits
}

// goldenTol bounds |ours − PyTorch fp32| per logit (measured: 1.3e-5). The golden's own float64
// cross-check agreed to 1.3e-5; logits are O(10).
const goldenTol = 1e-4

func TestGoldenLogits(t *testing.T) {
	m := loadTiny(t, "bf16")
	g, want := readGolden(t)
	for ei, e := range g.Entries {
		got, err := m.Forward(e.PromptIDs)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != e.Shape[0] {
			t.Fatalf("%s: %d rows, want %d", e.File, len(got), e.Shape[0])
		}
		var worst float64
		for pos, row := range got {
			for v, x := range row {
				worst = max(worst, math.Abs(float64(x)-float64(want[ei][pos*1024+v])))
			}
			if am := reference.Argmax(row, 0); am != e.ArgmaxIDs[pos] {
				t.Errorf("%s row %d: argmax %d, want %d", e.File, pos, am, e.ArgmaxIDs[pos])
			}
		}
		t.Logf("%s: max |Δlogit| = %.3g over %d×1024", e.File, worst, len(got))
		if worst > goldenTol {
			t.Errorf("%s: max |Δlogit| = %g > %g", e.File, worst, goldenTol)
		}
	}
}

func TestSessionMatchesForward(t *testing.T) {
	m := loadTiny(t, "bf16")
	g, _ := readGolden(t)
	ids := g.Entries[0].PromptIDs
	full, err := m.Forward(ids)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSession()
	var worst float64
	for pos, id := range ids {
		row, err := s.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		for v := range row {
			worst = max(worst, math.Abs(float64(row[v]-full[pos][v])))
		}
	}
	t.Logf("session vs forward: max |Δ| = %g", worst)
	if worst > 1e-5 || s.Pos() != len(ids) {
		t.Errorf("session differs from forward by %g (pos %d)", worst, s.Pos())
	}
	// Prefill of the same ids gives the last row.
	last, err := m.NewSession().Prefill(ids)
	if err != nil {
		t.Fatal(err)
	}
	for v := range last {
		if math.Abs(float64(last[v]-full[len(ids)-1][v])) > 1e-5 {
			t.Fatalf("prefill logit %d: %g vs %g", v, last[v], full[len(ids)-1][v])
		}
	}
}

// byteLevel is a minimal GPT-2 byte-level BPE for the tiny tokenizer, enough
// for the plain ASCII prompts of generations.json.
type byteLevel struct {
	vocab  map[string]int
	inv    map[int]string
	ranks  map[[2]string]int
	b2u    [256]rune
	u2b    map[rune]byte
	pretok *regexp.Regexp
}

func loadByteLevel(t *testing.T) *byteLevel {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tinyDir, "bf16", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Model struct {
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	bl := &byteLevel{vocab: tj.Model.Vocab, inv: map[int]string{}, ranks: map[[2]string]int{}, u2b: map[rune]byte{},
		pretok: regexp.MustCompile(`'s|'t|'re|'ve|'m|'ll|'d| ?\pL+| ?\pN+| ?[^\s\pL\pN]+|\s+`)}
	for s, id := range bl.vocab {
		bl.inv[id] = s
	}
	for _, a := range tj.AddedTokens {
		bl.inv[a.ID] = a.Content
	}
	for i, m := range tj.Model.Merges {
		a, b, _ := strings.Cut(m, " ")
		bl.ranks[[2]string{a, b}] = i
	}
	n := 0
	for c := 0; c < 256; c++ {
		if (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF) {
			bl.b2u[c] = rune(c)
		} else {
			bl.b2u[c] = rune(256 + n)
			n++
		}
		bl.u2b[bl.b2u[c]] = byte(c)
	}
	return bl
}

func (bl *byteLevel) encode(text string) []int {
	var ids []int
	for _, word := range bl.pretok.FindAllString(text, -1) {
		var sym []string
		for _, c := range []byte(word) {
			sym = append(sym, string(bl.b2u[c]))
		}
		for {
			best, at := -1, -1
			for i := 0; i+1 < len(sym); i++ {
				if r, ok := bl.ranks[[2]string{sym[i], sym[i+1]}]; ok && (best < 0 || r < best) {
					best, at = r, i
				}
			}
			if at < 0 {
				break
			}
			sym = append(sym[:at], append([]string{sym[at] + sym[at+1]}, sym[at+2:]...)...)
		}
		for _, s := range sym {
			ids = append(ids, bl.vocab[s])
		}
	}
	return ids
}

func (bl *byteLevel) decode(ids []int) string {
	var out []byte
	for _, id := range ids {
		s := bl.inv[id]
		if id >= 1016 { // special tokens are literal text
			out = append(out, s...)
			continue
		}
		for _, r := range s {
			out = append(out, bl.u2b[r])
		}
	}
	return string(out)
}

func TestGreedyGenerations(t *testing.T) {
	m := loadTiny(t, "bf16")
	bl := loadByteLevel(t)
	// Check the test tokenizer itself on a reference vector first.
	hello := []int{1016, 72, 470, 111, 44, 696, 33, 673, 328, 258, 279, 520, 793, 59, 557, 367, 299, 590, 63}
	if got := append([]int{1016}, bl.encode("Hello, world! It's a fine day; don't you think?")...); fmt.Sprint(got) != fmt.Sprint(hello) {
		t.Fatalf("test tokenizer: %v, want %v", got, hello)
	}
	var gens []struct{ Mode, Prompt, Output string }
	b, err := os.ReadFile(filepath.Join(tinyDir, "generations.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &gens); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range gens {
		if g.Mode != "greedy" {
			continue // sampled texts depend on PyTorch's RNG
		}
		n++
		prompt := append([]int{1016}, bl.encode(g.Prompt)...)
		out, err := m.GreedyWith(prompt, 60, reference.GreedyOptions{EOS: []int{1017}, Limit: 1019})
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Prompt + bl.decode(out); got != g.Output {
			t.Errorf("greedy %q:\n got %q\nwant %q", g.Prompt, got, g.Output)
		}
		// Without the padding mask the padding rows never win here either.
		plain, err := m.Greedy(prompt, 60, []int{1017})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(plain) != fmt.Sprint(out) {
			t.Errorf("greedy %q: unmasked run differs", g.Prompt)
		}
	}
	if n != 3 {
		t.Errorf("found %d greedy generations, want 3", n)
	}
}

func TestGreedyStopsAtEOS(t *testing.T) {
	m := loadTiny(t, "bf16")
	prompt := []int{1016, 476, 445, 307}
	out, err := m.Greedy(prompt, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 8 {
		t.Fatalf("got %d tokens, want 8", len(out))
	}
	// Declaring the third token an EOS stops right after it.
	stop, err := m.Greedy(prompt, 8, []int{out[2]})
	if err != nil {
		t.Fatal(err)
	}
	first := 0
	for first < len(out) && out[first] != out[2] {
		first++
	}
	if fmt.Sprint(stop) != fmt.Sprint(out[:first+1]) {
		t.Errorf("with eos %d: %v, want %v", out[2], stop, out[:first+1])
	}
}

func TestInvFreqLlama3(t *testing.T) {
	// Llama 3.2 rope: theta 5e5, head_dim 64, llama3 scaling factor 32, low 1,
	// high 4, original 8192. Expected values worked out separately (Python,
	// float64) from transformers' _compute_llama3_parameters rule.
	rs := &hf.RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}
	want := map[int]float64{
		0:  1.0,                    // high frequency: unchanged
		10: 0.016560440080994446,   // unchanged
		13: 0.004839421345719893,   // unchanged
		14: 0.0032114459947525913,  // unchanged (wavelen 1956.5 < 2048)
		15: 0.001290547928209264,   // smoothed
		16: 0.00042955679655936815, // smoothed
		17: 9.70828780262767e-05,   // smoothed
		18: 1.9461638184831125e-05, // low frequency: divided by 32
		20: 8.570255489881478e-06,
		31: 9.418306725434909e-08,
	}
	got, err := reference.InvFreq(64, 500000, rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 32 {
		t.Fatalf("%d frequencies, want 32", len(got))
	}
	for i, w := range want {
		if math.Abs(got[i]-w) > 1e-12*w {
			t.Errorf("inv_freq[%d] = %.17g, want %.17g", i, got[i], w)
		}
	}
	// Linear scaling divides every frequency; none leaves them alone.
	plain, err1 := reference.InvFreq(64, 500000, nil)
	lin, err2 := reference.InvFreq(64, 500000, &hf.RopeScaling{RopeType: "linear", Factor: 4})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	for i := range plain {
		if want := 1 / math.Pow(500000, float64(2*i)/64); math.Abs(plain[i]-want) > 1e-15*want || lin[i] != plain[i]/4 {
			t.Errorf("inv_freq[%d]: plain %g linear %g", i, plain[i], lin[i])
		}
	}
	// Unknown rope types and impossible shapes are errors, not ignored.
	for _, tc := range []struct {
		hd   int
		base float64
		rs   *hf.RopeScaling
		want string
	}{
		{64, 1e4, &hf.RopeScaling{RopeType: "yarn", Factor: 4}, `"yarn"`},
		{63, 1e4, nil, "head_dim 63"},
		{64, 0, nil, "rotary base"},
	} {
		_, err := reference.InvFreq(tc.hd, tc.base, tc.rs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("InvFreq(%d, %g, %v): error %v, want one naming %s", tc.hd, tc.base, tc.rs, err, tc.want)
		}
	}
	if _, err := reference.InvFreq(64, 1e4, &hf.RopeScaling{RopeType: "yarn"}); !errors.Is(err, hf.ErrUnsupported) {
		t.Errorf("unknown rope type: %v does not wrap hf.ErrUnsupported", err)
	}
}

func TestBadInput(t *testing.T) {
	m := loadTiny(t, "bf16")
	for _, ids := range [][]int{{1016, 1024}, {-1}} {
		if _, err := m.Forward(ids); err == nil {
			t.Errorf("Forward(%v) accepted", ids)
		}
		if _, err := m.NewSession().Prefill(ids); err == nil {
			t.Errorf("Prefill(%v) accepted", ids)
		}
	}
	if _, err := m.NewSession().Prefill(nil); err == nil {
		t.Error("empty prefill accepted")
	}
	if got := reference.Argmax([]float32{1, 5, 5, 9}, 3); got != 1 {
		t.Errorf("Argmax with limit = %d, want 1", got)
	}
}
