package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/hf"
)

const tinyCalibration = "../../testdata/tiny-llama-fortunes/text/calibration.txt"

// TestCalibratedPartsDeterministic writes the LM head and the first FFN
// chunk with calibration under GOMAXPROCS 1 and 4 (statistics collected
// afresh each time): the packages must be byte-identical.
func TestCalibratedPartsDeterministic(t *testing.T) {
	var first map[string][]byte
	for _, procs := range []int{1, 4} {
		old := runtime.GOMAXPROCS(procs)
		dir := t.TempDir()
		s, err := Open(Options{Model: tinyModel, Output: dir, ContextLength: 128, BatchSize: 32, NumChunks: 2,
			LUT: decoder.LUTBits{FFN: 4, LMHead: 6}, Calibration: tinyCalibration, CalibrationTokens: 512})
		if err != nil {
			runtime.GOMAXPROCS(old)
			t.Fatal(err)
		}
		if s.Calib.Set.Tokens != 512 || s.Calib.Set.Sequences != 4 {
			t.Errorf("calibrated on %d tokens in %d sequences, want 512 in 4", s.Calib.Set.Tokens, s.Calib.Set.Sequences)
		}
		got := map[string][]byte{}
		for _, p := range []arch.Part{arch.PartLMHead, arch.PartFFN} {
			path, err := s.WritePart(p, 0, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(path, "Data", "com.apple.CoreML", "weights", "weight.bin"))
			if err != nil {
				t.Fatal(err)
			}
			got[filepath.Base(path)] = b
		}
		s.Close()
		runtime.GOMAXPROCS(old)
		if first == nil {
			first = got
			continue
		}
		for name, b := range got {
			if !bytes.Equal(b, first[name]) {
				t.Errorf("%s differs between GOMAXPROCS 1 and %d", name, procs)
			}
		}
	}
}

// TestCalibrationMeta checks meta.yaml records the calibration, and only
// when there is one.
func TestCalibrationMeta(t *testing.T) {
	raw, err := os.ReadFile(tinyCalibration)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	for _, cal := range []bool{false, true} {
		dir := t.TempDir()
		opts := Options{Model: tinyModel, Output: dir, ContextLength: 128, BatchSize: 32, NumChunks: 2,
			LUT: decoder.LUTBits{FFN: 4, LMHead: 6}, Only: 7}
		if cal {
			opts.Calibration, opts.CalibrationTokens = tinyCalibration, 512
		}
		if _, err := Run(opts); err != nil {
			t.Fatal(err)
		}
		meta, err := os.ReadFile(filepath.Join(dir, "meta.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := "    prefill_dynamic_slice: true\n"
		if cal {
			want += "    calibration_tokens: 512\n    calibration_sha256: " + hex.EncodeToString(sum[:]) + "\n"
		}
		if !strings.HasSuffix(string(meta), want) {
			t.Errorf("calibrated=%v: meta.yaml ends\n%s\nwant\n%s", cal, tail(string(meta), 3), want)
		}
		// Every package records the calibration too.
		s, err := Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		pkg, err := s.Conv.Part(arch.PartFFN, 0)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		ud := pkg.Description.Metadata.UserDefined
		if got, want := ud["com.anemll-go.calibration_sha256"], map[bool]string{true: hex.EncodeToString(sum[:])}[cal]; got != want {
			t.Errorf("calibrated=%v: package calibration_sha256 %q, want %q", cal, got, want)
		}
		if got, want := ud["com.anemll-go.calibration_tokens"], map[bool]string{true: "512"}[cal]; got != want {
			t.Errorf("calibrated=%v: package calibration_tokens %q, want %q", cal, got, want)
		}
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// TestCalibrationFullLimit checks which inputs collect a full Gram matrix:
// those some weight can afford to use it for (quant.MaxLiteGramWork).
func TestCalibrationFullLimit(t *testing.T) {
	tests := []struct {
		name        string
		kvHeads, hd int
		want        int
	}{
		{"tiny (2×32 KV rows; widest input 384)", 2, 32, 2896},
		{"mid-size (2×64)", 2, 64, 2048},
		{"Llama-3.2-1B (8×64)", 8, 64, 1024},
		{"no KV heads given", 0, 0, 4096},
	}
	for _, tc := range tests {
		got := fullLimit(&hf.Config{NumKeyValueHeads: tc.kvHeads, HeadDim: tc.hd})
		if got != tc.want {
			t.Errorf("%s: full Gram up to %d inputs, want %d", tc.name, got, tc.want)
		}
	}
}
