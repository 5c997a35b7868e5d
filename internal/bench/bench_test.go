package bench

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/anemll/anemll/internal/verify"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/pipeline"
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

// BenchmarkConvertMid runs the whole pipeline (steps 1–7, --skip-check)
// on the mid-size shape; the target is 0.8 s on 2 cores.
func BenchmarkConvertMid(b *testing.B) {
	tmp := b.TempDir()
	for b.Loop() {
		if err := Convert(io.Discard, tmp, []Shape{MidSize()}, pipeline.Options{}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConvertSmall runs Convert on a small random shape from this package's
// directory (not the repository root: the stand-in tokenizer is embedded)
// and checks the table: seven steps with their bytes, a total, the floor
// line and the output of every step but compile.
func TestConvertSmall(t *testing.T) {
	sh := Shape{Name: "small", Opts: synth.Options{Hidden: 64, Intermediate: 128, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 1024, Seed: 3}}
	var buf bytes.Buffer
	if err := Convert(&buf, t.TempDir(), []Shape{sh}, pipeline.Options{ContextLength: 64, BatchSize: 16}, nil); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{"this machine: reads the checkpoint at", "     total", "small: checkpoint"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the table", want)
		}
	}
	steps := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || len(f[0]) != 1 || f[0] < "1" || f[0] > "7" {
			continue
		}
		steps++
		written := f[len(f)-5]
		if f[0] != "6" && written == "-" {
			t.Errorf("step %s wrote nothing: %q", f[0], line)
		}
	}
	if steps != 7 {
		t.Errorf("%d step lines, want 7", steps)
	}
}

// TestConvertWithVerify runs the benchmark with step 8 on its short
// prompt: the table gains step 8 and the verification report.
func TestConvertWithVerify(t *testing.T) {
	sh := Shape{Name: "small", Opts: synth.Options{Hidden: 64, Intermediate: 128, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 1024, Seed: 3}}
	var buf bytes.Buffer
	if err := Convert(&buf, t.TempDir(), []Shape{sh}, pipeline.Options{ContextLength: 64, BatchSize: 16}, verify.DirectoryText); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{"\n0    Opening: checks", "\n8    Verifying against the checkpoint", "steps 0-8 in", "step 8 on ", "weights read back from the packages"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output", want)
		}
	}
}

// TestConvertVerifyFailurePrintsTable: when step 8's check fails, the
// table and the report are still printed, and the error is returned.
func TestConvertVerifyFailurePrintsTable(t *testing.T) {
	sh := Shape{Name: "small", Opts: synth.Options{Hidden: 64, Intermediate: 128, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 1024, Seed: 3}}
	var buf bytes.Buffer
	fail := func(model, dir, text string, out io.Writer) error {
		fmt.Fprintln(out, "the report")
		return errors.New("top-1 below threshold")
	}
	err := Convert(&buf, t.TempDir(), []Shape{sh}, pipeline.Options{ContextLength: 64, BatchSize: 16}, fail)
	if err == nil || !strings.Contains(err.Error(), "step 8: top-1 below threshold") {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{"\n0    Opening: checks", "\n8    Verifying against the checkpoint", "steps 0-8 in", "the report"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %q in the output:\n%s", want, buf.String())
		}
	}
}
