package reference_test

import (
	"math"
	"runtime"
	"slices"
	"testing"

	"github.com/anemll/anemll/internal/reference"
)

// TestFastAgainstNaive checks Options.Fast (fp32 products through the
// shared kernels) on every family against the float64 transcription, to
// 2e-5 of the largest logit, and that its numbers do not depend on the
// number of cores or on lazy loading (bit for bit).
func TestFastAgainstNaive(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for i, fc := range familyCases() {
		t.Run(fc.name, func(t *testing.T) {
			dir, tensors := buildCase(t, fc, uint64(100+i))
			var first [][]float32
			for _, run := range []struct {
				procs int
				lazy  bool
			}{{1, false}, {2, false}, {3, true}} {
				runtime.GOMAXPROCS(run.procs)
				m := openModel(t, dir, reference.Options{Fast: true, Lazy: run.lazy})
				got, err := m.Forward(synthIDs)
				if err != nil {
					t.Fatal(err)
				}
				if empty, err := m.Forward(nil); err != nil || len(empty) != 0 {
					t.Fatalf("empty sequence: %d rows, error %v", len(empty), err)
				}
				if first == nil {
					first = got
					cfg := m.Config()
					want := naiveForward(cfg, fc.naive(cfg), func(n string) []float32 { return tensors[n] }, synthIDs)
					worst, scale := maxDiff(got, want)
					t.Logf("max |Δ| = %.3g, max |logit| = %.3g", worst, scale)
					if worst > 2e-5*max(1, scale) {
						t.Errorf("fast mode differs from the naive loop by %g (logits up to %g)", worst, scale)
					}
					continue
				}
				for p := range got {
					if !slices.Equal(got[p], first[p]) {
						t.Fatalf("GOMAXPROCS %d lazy %v: position %d differs from the first run", run.procs, run.lazy, p)
					}
				}
			}
		})
	}
}

// TestTrace checks that Trace reports to the observers exactly what
// Forward reports (same calls, same values), in the default and the fast
// mode, and that the fast mode's observations are the default's to fp32
// rounding.
func TestTrace(t *testing.T) {
	fc := familyCases()[0] // llama with every bias
	dir, _ := buildCase(t, fc, 7)
	var logs [2][]observation
	for i, fast := range []bool{false, true} {
		m := openModel(t, dir, reference.Options{Fast: fast})
		fwd := record(m)
		if _, err := m.Forward(synthIDs); err != nil {
			t.Fatal(err)
		}
		want := *fwd
		tr := record(m)
		if err := m.Trace(synthIDs); err != nil {
			t.Fatal(err)
		}
		got := *tr
		if len(got) != len(want) || len(got) == 0 {
			t.Fatalf("fast %v: Trace made %d observations, Forward %d", fast, len(got), len(want))
		}
		for j := range got {
			if got[j].name != want[j].name || !slices.Equal(got[j].x, want[j].x) {
				t.Fatalf("fast %v: observation %d (%s) differs from Forward's (%s)", fast, j, got[j].name, want[j].name)
			}
		}
		logs[i] = got
	}
	var worst, scale float64
	for j, o := range logs[1] {
		if o.name != logs[0][j].name {
			t.Fatalf("observation %d: fast %s, default %s", j, o.name, logs[0][j].name)
		}
		for c, v := range o.x {
			worst = max(worst, math.Abs(float64(v-logs[0][j].x[c])))
			scale = max(scale, math.Abs(float64(v)))
		}
	}
	t.Logf("fast against default observations: max |Δ| %.3g, max |x| %.3g", worst, scale)
	if worst > 1e-4*max(1, scale) {
		t.Errorf("fast observations differ from the default mode's by %g (values up to %g)", worst, scale)
	}
}

// TestFastTiny runs the trained tiny model both ways: the fast mode's
// logits stay within 1e-4 of the default's and pick the same top token.
func TestFastTiny(t *testing.T) {
	g, _ := readGolden(t)
	ids := g.Entries[0].PromptIDs
	def := loadTiny(t, "bf16")
	want, err := def.Forward(ids)
	if err != nil {
		t.Fatal(err)
	}
	fast := openModel(t, tinyDir+"/bf16", reference.Options{Fast: true})
	got, err := fast.Forward(ids)
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for p := range want {
		for v := range want[p] {
			worst = max(worst, math.Abs(float64(got[p][v]-want[p][v])))
		}
		if argmax(got[p]) != argmax(want[p]) {
			t.Errorf("position %d: fast top-1 %d, default %d", p, argmax(got[p]), argmax(want[p]))
		}
	}
	t.Logf("%d positions: max |Δ logit| %.3g", len(want), worst)
	if worst > 1e-4 {
		t.Errorf("fast logits differ from the default mode's by %g", worst)
	}
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}
