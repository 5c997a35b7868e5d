package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestPeakRSS(t *testing.T) {
	if n := PeakRSS(); n < 1<<20 {
		t.Skipf("VmHWM not available (%d)", n)
	}
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
