package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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

func TestRuntimeTinyRow(t *testing.T) {
	var buf bytes.Buffer
	if err := Runtime(&buf, t.TempDir(), "../../testdata/tiny-llama-fortunes/bf16", false, 4); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "tiny-llama-fortunes") {
		t.Fatalf("table:\n%s", buf.String())
	}
	f := strings.Fields(lines[1])
	if f[len(f)-1] == "0.0" || f[len(f)-2] == "0.0" || strings.Contains(lines[1], "NaN") {
		t.Errorf("bad speeds: %q", lines[1])
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
