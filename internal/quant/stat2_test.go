package quant

import (
	"math"
	"sort"
	"testing"
)

// fullF returns F(1..K) exact via D&C DP.
func fullF(s *solver, K int) []float64 {
	n := len(s.val)
	prev := make([]float64, n+1)
	for x := 0; x <= n; x++ {
		prev[x] = s.cost(0, x)
	}
	F := []float64{math.NaN(), prev[n]}
	cur := make([]float64, n+1)
	var rec func(a, b, oa, ob int)
	rec = func(a, b, oa, ob int) {
		if a > b {
			return
		}
		x := (a + b) / 2
		best, by := math.Inf(1), oa
		for y := oa; y <= min(ob, x); y++ {
			v := prev[y] + s.cost(y, x)
			if v < best {
				best, by = v, y
			}
		}
		cur[x] = best
		rec(a, x-1, oa, by)
		rec(x+1, b, by, ob)
	}
	for m := 2; m <= K; m++ {
		rec(0, n, 0, n)
		prev, cur = cur, prev
		F = append(F, prev[n])
	}
	return F
}

func TestLambdaWindows(t *testing.T) {
	for _, bits := range []int{4, 6} {
		k := 1 << bits
		var lo, hi, est []float64
		s := newSolver(bits)
		for _, tn := range loadTiny(t) {
			if !Eligible(tn.Shape, 0) {
				continue
			}
			per := len(tn.Data) / int(tn.Shape[0]/8)
			for g := 0; g*per < len(tn.Data); g += 3 {
				s.distinct(tn.Data[g*per : (g+1)*per])
				F := fullF(s, k+1)
				e := s.initialPenalty()
				lo = append(lo, (F[k]-F[k+1])/e)
				hi = append(hi, (F[k-1]-F[k])/e)
				est = append(est, e)
			}
		}
		// width ratio hi/lo, and spread of geometric mid
		var w, mids []float64
		for i := range lo {
			w = append(w, hi[i]/lo[i])
			mids = append(mids, math.Sqrt(hi[i]*lo[i]))
		}
		sort.Float64s(w)
		sort.Float64s(mids)
		q := func(a []float64, p float64) float64 { return a[int(p*float64(len(a)-1))] }
		t.Logf("bits %d: %d groups; hi/lo quantiles 5%% %.3f 50%% %.3f 95%% %.3f; mid/est 5%% %.3f 50%% %.3f 95%% %.3f",
			bits, len(w), q(w, .05), q(w, .5), q(w, .95), q(mids, .05), q(mids, .5), q(mids, .95))
	}
}
