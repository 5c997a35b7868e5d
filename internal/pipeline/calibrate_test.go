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

// TestCalibrationFullWidths checks which inputs collect a full Gram
// matrix: those some weight reading them can afford to use it for
// (quant.GramAffordable).
func TestCalibrationFullWidths(t *testing.T) {
	cfg := func(h, inter, heads, kv, hd int) *hf.Config {
		return &hf.Config{HiddenSize: h, IntermediateSize: inter, NumAttentionHeads: heads, NumKeyValueHeads: kv, HeadDim: hd}
	}
	tests := []struct {
		name string
		cfg  *hf.Config
		full map[int]bool // input width -> full Gram wanted
	}{
		{"tiny: every input", cfg(128, 384, 4, 2, 32), map[int]bool{128: true, 384: true}},
		{"mid-size: not down_proj's 2048 (512 rows)", cfg(512, 2048, 8, 2, 64), map[int]bool{512: true, 2048: false}},
		{"Llama-3.2-1B: none", cfg(2048, 8192, 32, 8, 64), map[int]bool{2048: false, 8192: false}},
		{"Qwen3-0.6B: none (q is 2048 wide, hidden 1024)", cfg(1024, 3072, 16, 8, 128), map[int]bool{1024: false, 2048: false, 3072: false}},
		{"Gemma-3-1B: none (256-row k_proj, but 1152 wide)", cfg(1152, 6912, 4, 1, 256), map[int]bool{1152: false, 1024: false, 6912: false}},
		{"no shapes given: by DefaultFullLimit", &hf.Config{}, map[int]bool{4096: true, 4097: false}},
	}
	for _, tc := range tests {
		f := fullWidths(tc.cfg)
		for in, want := range tc.full {
			if got := f(in); got != want {
				t.Errorf("%s: input %d full Gram %v, want %v", tc.name, in, got, want)
			}
		}
	}
}
