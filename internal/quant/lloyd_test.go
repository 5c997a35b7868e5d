package quant

import "slices"

// LloydMaxIter caps LloydBaseline's iterations per group.
const LloydMaxIter = 1000

// LloydBaseline palettizes like Palettize but with plain Lloyd k-means, the
// baseline the tests and benchmarks compare Palettize with. In each group the centroids start at the quantile seeds — the
// sorted weights at ranks ⌊(2j+1)·n/(2k)⌋, j = 0..k−1 — and each iteration
// assigns every weight to its nearest centroid (ties to the lowest index, so
// of several equal centroids only the first gets weights) and moves every
// non-empty centroid to the mean of its weights, until no assignment changes
// or LloydMaxIter iterations. Equal weights always share a centroid, so the
// iteration runs over the group's distinct values with their counts, which
// gives the same result as iterating over every weight. The centroids are
// then rounded to fp16 and the weights reassigned as Palettize does. Groups
// run one after another; opts.Workers is ignored.
func LloydBaseline(w []uint16, shape []int64, opts Options) (*Palette, error) {
	if err := check(w, shape, &opts); err != nil {
		return nil, err
	}
	if err := nonFinite(w); err != nil {
		return nil, err
	}
	p := newPalette(w, shape, opts)
	groups := p.Groups()
	per := len(w) / groups
	k := 1 << opts.Bits
	s := newSolver(opts.Bits)
	mid := make([]float64, k-1)
	sum := make([]float64, k)
	count := make([]float64, k)
	var assign []int
	for g := 0; g < groups; g++ {
		gw := w[g*per : (g+1)*per]
		lut, idx := p.LUT[g*k:(g+1)*k], p.Indices[g*per:(g+1)*per]
		s.distinct(gw)
		n := len(s.val)
		if n <= k {
			s.solveGroup(gw, lut, idx) // exact, as for Palettize
			continue
		}
		c := s.means
		i := 0
		for j := range c {
			rank := float64((2*j + 1) * per / (2 * k))
			for s.p0[i+1] <= rank {
				i++
			}
			c[j] = s.val[i]
		}
		assign = resize(assign, n)
		for i := range assign {
			assign[i] = -1
		}
		for it := 0; it < LloydMaxIter; it++ {
			for j := 0; j+1 < k; j++ {
				mid[j] = (c[j] + c[j+1]) / 2
			}
			changed := false
			for i, v := range s.val {
				// The centroids stay ascending, so the nearest one is at the
				// first midpoint ≥ v, moved down over equal centroids.
				j, _ := slices.BinarySearch(mid, v)
				for j > 0 && c[j-1] == c[j] {
					j--
				}
				if assign[i] != j {
					assign[i] = j
					changed = true
				}
			}
			if !changed {
				break
			}
			clear(sum)
			clear(count)
			for i, a := range assign {
				sum[a] += s.cnt[i] * s.val[i]
				count[a] += s.cnt[i]
			}
			for j := range c {
				if count[j] > 0 {
					c[j] = sum[j] / count[j]
				}
			}
		}
		s.finish()
		copy(lut, s.lut)
		s.setIndices(gw, idx)
	}
	return p, nil
}
