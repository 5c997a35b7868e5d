package runner

import "testing"

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
