package runner

import (
	"slices"
	"testing"
)

func TestSampler(t *testing.T) {
	logits := []float32{0, 2, 1, 2.5, -1}
	if got := NewSampler(Sampling{}).Next(logits); got != 3 {
		t.Errorf("greedy chose %d, want 3", got)
	}
	if got := NewSampler(Sampling{Limit: 3}).Next(logits); got != 1 {
		t.Errorf("greedy under limit 3 chose %d, want 1", got)
	}
	// A tiny top-p keeps only the most likely token.
	sm := NewSampler(Sampling{Temperature: 1, TopP: 0.01, Seed: 9})
	for i := 0; i < 50; i++ {
		if got := sm.Next(logits); got != 3 {
			t.Fatalf("top-p 0.01 chose %d", got)
		}
	}
	// Same seed, same draws; frequencies follow softmax (token 3 is the
	// most likely, token 4 the least).
	a, b := NewSampler(Sampling{Temperature: 1, Seed: 4}), NewSampler(Sampling{Temperature: 1, Seed: 4})
	count := make([]int, len(logits))
	for i := 0; i < 4000; i++ {
		x, y := a.Next(logits), b.Next(logits)
		if x != y {
			t.Fatalf("draw %d differs between equal seeds: %d vs %d", i, x, y)
		}
		count[x]++
	}
	for i := range count {
		if i != 3 && count[i] >= count[3] {
			t.Errorf("token %d drawn %d times, more than the likeliest token 3 (%d)", i, count[i], count[3])
		}
	}
	if count[4] >= count[0] {
		t.Errorf("counts %v: token 4 (logit -1) drawn as often as token 0 (logit 0)", count)
	}
}

// TestGenerateStops runs the Apple-made fp16 packages of the tiny random
// model greedily, then again with a set of end-of-generation ids taken from
// that run: generation must stop right after the first of them, report it,
// and have emitted the same tokens up to it.
func TestGenerateStops(t *testing.T) {
	files, err := FindFiles("../../testdata/anemll-tiny-random/packages-fp16")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int{1, 17, 42, 99, 250, 7}
	run := func(maxTokens int, eos func(int) bool) ([]int, GenerateStats) {
		var out []int
		st, err := m.Generate(prompt, maxTokens, NewSampler(Sampling{}), eos, func(id int) bool {
			out = append(out, id)
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		return out, st
	}
	free, st := run(24, nil)
	if len(free) != 24 || st.Stop != "max-tokens" || st.NewTokens != 24 {
		t.Fatalf("free run: %d tokens, stop %q", len(free), st.Stop)
	}
	// Stop ids: one that first appears at k ≥ 3, one first appearing later.
	k := -1
	for i := 3; i < len(free) && k < 0; i++ {
		if !slices.Contains(free[:i], free[i]) {
			k = i
		}
	}
	if k < 0 {
		t.Skip("greedy run repeats one token; no stop id to pick")
	}
	later := -1
	for i := k + 1; i < len(free); i++ {
		if !slices.Contains(free[:i], free[i]) {
			later = free[i]
			break
		}
	}
	stops := []int{later, free[k]}
	t.Logf("greedy run %v; stop ids %v (first at %d)", free, stops, k)
	got, st := run(24, func(id int) bool { return slices.Contains(stops, id) })
	if !slices.Equal(got, free[:k+1]) {
		t.Errorf("with stop ids %v: emitted %v, want %v", stops, got, free[:k+1])
	}
	if st.Stop != "eos" || st.StopID != free[k] || st.NewTokens != k+1 {
		t.Errorf("stats %+v, want stop eos on %d after %d tokens", st, free[k], k+1)
	}
}
