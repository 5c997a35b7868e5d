package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
)

// TestPeakRSS touches 64 MiB and checks the peak grows by about that much.
func TestPeakRSS(t *testing.T) {
	if PeakRSS() == 0 {
		t.Skip("no /proc/self/status VmHWM on this system")
	}
	ResetPeakRSS()
	before := PeakRSS()
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after := PeakRSS()
	if grew := after - before; grew < 60<<20 {
		t.Errorf("peak RSS grew by %d bytes after touching 64 MiB", grew)
	}
	runtime.KeepAlive(buf)
}

// TestRuntimeTinyRow checks that the runtime benchmark measures a real,
// correct generation: a 64-token prefill and 4 greedy tokens that equal
// the reference forward pass's greedy continuation.
func TestRuntimeTinyRow(t *testing.T) {
	const model = "../../testdata/tiny-llama-fortunes/bf16"
	r, err := runtimeRow(t.TempDir(), model, 512, 64, 4)
	if err != nil {
		t.Fatal(err)
	}
	if r.stats.PromptTokens != 64 || r.stats.NewTokens != 4 || len(r.tokens) != 4 {
		t.Fatalf("measured %d prompt and %d new tokens (%v), want 64 and 4", r.stats.PromptTokens, r.stats.NewTokens, r.tokens)
	}
	cfg, err := hf.LoadConfig(model)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(model)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	ref, err := reference.New(cfg, reference.CheckpointWeights(ck))
	if err != nil {
		t.Fatal(err)
	}
	want, err := ref.Greedy(r.prompt, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.tokens, want) {
		t.Errorf("benchmark generated %v, the reference greedily %v", r.tokens, want)
	}
	for _, v := range []float64{r.stats.PrefillTokensPerSecond(), r.stats.DecodeTokensPerSecond()} {
		if !(v > 0) || math.IsInf(v, 0) {
			t.Errorf("speed %v is not a positive finite number", v)
		}
	}
	var buf bytes.Buffer
	if err := Runtime(&buf, t.TempDir(), model, false, 2); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(buf.String()), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "tiny-llama-fortunes") {
		t.Errorf("table:\n%s", buf.String())
	}
}

// TestStandInTokenizer: outside the repository (no tokenizer in tokDir)
// the convert benchmark writes a minimal, valid tokenizer.json instead of
// failing; inside it copies the bundled one.
func TestStandInTokenizer(t *testing.T) {
	dir := t.TempDir()
	var log strings.Builder
	if err := standInTokenizer(&log, filepath.Join(dir, "nowhere"), dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	var js map[string]any
	if err != nil || json.Unmarshal(b, &js) != nil || js["model"] == nil || !strings.Contains(log.String(), "stand-in") {
		t.Errorf("minimal tokenizer: %v %q, log %q", err, b, log.String())
	}
	dir2 := t.TempDir()
	if err := standInTokenizer(&log, "../../testdata/tiny-llama-fortunes/bf16", dir2); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("../../testdata/tiny-llama-fortunes/bf16/tokenizer.json")
	if got, _ := os.ReadFile(filepath.Join(dir2, "tokenizer.json")); string(got) != string(want) || len(want) == 0 {
		t.Errorf("bundled tokenizer not copied")
	}
}
