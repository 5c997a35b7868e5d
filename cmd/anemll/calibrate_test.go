package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const tinyCalibration = "../../testdata/tiny-llama-fortunes/text/calibration.txt"

// TestCalibrationBadInputs: an empty or unreadable calibration file, text
// shorter than one sequence, and calibration without LUT bits each give one
// line, a non-zero exit and no output directory, for the pipeline and for
// --part.
func TestCalibrationBadInputs(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	short := filepath.Join(dir, "short.txt")
	os.WriteFile(short, []byte("Q: Why?\nA: Because.\n%\n"), 0o644)
	missing := filepath.Join(dir, "missing.txt")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"empty file", []string{"--calibration", empty}, []string{empty, "empty"}},
		{"unreadable file", []string{"--calibration", missing}, []string{missing}},
		{"too short", []string{"--calibration", short}, []string{short, "fewer than one sequence", "512", "more text"}},
		{"too few tokens allowed", []string{"--calibration", tinyCalibration, "--calibration-tokens", "100"}, []string{"100", "fewer than one sequence", "--calibration-tokens"}},
		{"no LUT bits", []string{"--calibration", tinyCalibration, "--lut2", "none", "--lut3", "none"}, []string{"--calibration", "no LUT bits"}},
		{"part without LUT bits", []string{"--part", "3", "--calibration", tinyCalibration}, []string{"no LUT bits"}},
		{"part, empty file", []string{"--part", "2", "--lut", "4", "--calibration", empty}, []string{empty}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			var so, se bytes.Buffer
			args := append([]string{"convert", "--model", tinyModel, "--output", out, "--skip-check"}, tc.args...)
			if code := run(args, &so, &se); code == 0 {
				t.Fatalf("exit 0; stderr:\n%s", se.String())
			}
			msg := strings.TrimSpace(se.String())
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "anemll convert: ") {
				t.Errorf("want one prefixed line, got %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output %s was created", out)
			}
		})
	}
}

// TestConvertPartCalibrated converts the LM head with calibration: the
// run reports the errors before and after, and the package differs from
// the uncalibrated one (only palette values and indices can differ; the
// graph is checked elsewhere).
func TestConvertPartCalibrated(t *testing.T) {
	outs := map[bool]string{}
	for _, cal := range []bool{false, true} {
		out := t.TempDir()
		var so, se bytes.Buffer
		args := []string{"convert", "--part", "3", "--lut", "6", "--context", "256", "--model", tinyModel, "--output", out}
		if cal {
			args = append(args, "--calibration", tinyCalibration, "--calibration-tokens", "1024")
		}
		if code := run(args, &so, &se); code != 0 {
			t.Fatalf("exit %d: %s", code, se.String())
		}
		line := strings.Contains(se.String(), "calibration llama_lm_head_lut6.mlpackage (8 weights): weight error")
		if line != cal {
			t.Errorf("calibrated=%v: report line present=%v in\n%s", cal, line, se.String())
		}
		outs[cal] = out
	}
	a, err := os.ReadFile(filepath.Join(outs[false], "llama_lm_head_lut6.mlpackage", "Data", "com.apple.CoreML", "weights", "weight.bin"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(outs[true], "llama_lm_head_lut6.mlpackage", "Data", "com.apple.CoreML", "weights", "weight.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) || bytes.Equal(a, b) {
		t.Errorf("weight.bin %d and %d bytes, equal=%v: want the same size, different palettes", len(a), len(b), bytes.Equal(a, b))
	}
}
