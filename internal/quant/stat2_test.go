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
		s := newSolver(bits)
		hitFixed, hitMed, tot := 0, 0, 0
		var spreads []float64
		for _, tn := range loadTiny(t) {
			if !Eligible(tn.Shape, 0) {
				continue
			}
			per := len(tn.Data) / int(tn.Shape[0]/8)
			var lo, hi, mid []float64
			for g := 0; g*per < len(tn.Data); g += 2 {
				s.distinct(tn.Data[g*per : (g+1)*per])
				F := fullF(s, k+1)
				e := s.initialPenalty()
				lo = append(lo, (F[k]-F[k+1])/e)
				hi = append(hi, (F[k-1]-F[k])/e)
				mid = append(mid, math.Sqrt(lo[len(lo)-1]*hi[len(hi)-1]))
			}
			r0 := mid[0]
			ms := append([]float64(nil), mid...)
			sort.Float64s(ms)
			med := ms[len(ms)/2]
			for i := range lo {
				tot++
				if lo[i] <= r0 && r0 <= hi[i] {
					hitFixed++
				}
				if lo[i] <= med && med <= hi[i] {
					hitMed++
				}
				spreads = append(spreads, mid[i]/med)
			}
		}
		sort.Float64s(spreads)
		q := func(a []float64, p float64) float64 { return a[int(p*float64(len(a)-1))] }
		t.Logf("bits %d: %d groups; hit with group0 ratio %.2f, with median ratio %.2f; mid/med 5%% %.3f 25%% %.3f 75%% %.3f 95%% %.3f", bits, tot, float64(hitFixed)/float64(tot), float64(hitMed)/float64(tot), q(spreads, .05), q(spreads, .25), q(spreads, .75), q(spreads, .95))
	}
}
