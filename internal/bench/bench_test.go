package bench

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/pipeline"
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

// BenchmarkConvertMid runs the whole pipeline (steps 1–7, --skip-check)
// on the mid-size shape; the target is 0.8 s on 2 cores.
func BenchmarkConvertMid(b *testing.B) {
	tmp := b.TempDir()
	for b.Loop() {
		if err := Convert(io.Discard, tmp, []Shape{MidSize()}, pipeline.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
