package quant

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/anemll/anemll/internal/fp16"
)

// This file holds the per-group oldSolver: weighted 1-D k-means over the sorted
// distinct fp16 values of one group. Prefix sums of count, count·v and
// count·v² make the mean and the squared error of any run of consecutive
// distinct values an O(1) computation, and in 1-D every k-means optimum
// assigns contiguous runs of sorted values to each centroid, so a solution is
// just k−1 cut positions.

const (
	// oldHistThreshold is the group size from which distinct values are found
	// with a 65536-entry histogram instead of sorting the group's keys.
	oldHistThreshold = 16384
	// oldDpBudget is the work (k·M·log₂M cost evaluations for M candidate cut
	// positions) a group's exact dynamic programme may take. Groups whose
	// distinct values fit are solved exactly; larger ones get a coarse exact
	// solve over about M candidate positions and band polishing.
	oldDpBudget = 250_000
	// oldAtomsPerCluster is the minimum resolution of the coarse solve: at
	// least this many candidate cut positions per cluster.
	oldAtomsPerCluster = 4
	// oldBandWidth is the ± window, in distinct values, of each polishing pass.
	oldBandWidth = 16
	// oldMaxBandPasses bounds the polishing passes (full or partial).
	oldMaxBandPasses = 1000
)

// oldSolver holds one worker's scratch space. It is reused across groups and
// its results do not depend on what it solved before.
type oldSolver struct {
	k int // number of LUT entries, 2^bits

	hist   []uint32 // per order key count (histogram path), all zero between groups
	keys   []uint16 // order keys of the group (sort path)
	keys32 []uint32 // histogram-path scratch

	dkey []uint16  // distinct order keys, ascending
	val  []float64 // their values
	cnt  []float64 // their counts
	p0   []float64 // prefix sums of cnt, len n+1
	p1   []float64 // prefix sums of cnt·val
	p2   []float64 // prefix sums of cnt·val²

	cuts  []int     // cluster j covers distinct values [cuts[j], cuts[j+1])
	means []float64 // centroid values, ascending

	// Dynamic-programme scratch.
	pos        []int
	a0, a1, a2 []float64
	prev, cur  []float64
	arg        []int32
	bandLo     []int
	bandHi     []int
	bandOff    []int
	bandF      []float64
	bandA      []int32
	moved      []bool
	next       []bool

	lut   []uint16  // candidate LUT (half bits), ascending
	lutV  []float64 // its values
	index []uint8   // per distinct value: LUT index
	byKey [1 << 16]uint8
}

func newOldSolver(bits int) *oldSolver {
	k := 1 << bits
	return &oldSolver{
		k:       k,
		cuts:    make([]int, k+1),
		means:   make([]float64, k),
		bandLo:  make([]int, k+1),
		bandHi:  make([]int, k+1),
		bandOff: make([]int, k+2),
		lut:     make([]uint16, k),
		lutV:    make([]float64, k),
	}
}

// distinct fills dkey, val, cnt and the prefix sums from the group's half
// values, which must be finite.
func (s *oldSolver) distinct(w []uint16) {
	s.dkey = s.dkey[:0]
	s.cnt = s.cnt[:0]
	if len(w) >= oldHistThreshold {
		if s.hist == nil {
			s.hist = make([]uint32, 1<<16)
		}
		h := s.hist[:1<<16]
		for _, x := range w {
			h[orderKey(x)]++
		}
		// Branch-free compaction of the non-zero bins (their pattern is
		// unpredictable), counts parked in keys32 until converted.
		s.dkey = resize(s.dkey, 1<<16)
		s.keys32 = resize(s.keys32, 1<<16)
		dk, dc := s.dkey[:1<<16], s.keys32[:1<<16]
		nd := 0
		for key, c := range h {
			dk[nd&0xffff] = uint16(key)
			dc[nd&0xffff] = c
			nd += int((c | -c) >> 31)
		}
		clear(h)
		s.dkey = s.dkey[:nd]
		for _, c := range dc[:nd] {
			s.cnt = append(s.cnt, float64(c))
		}
	} else {
		s.keys = s.keys[:0]
		for _, x := range w {
			s.keys = append(s.keys, orderKey(x))
		}
		slices.Sort(s.keys)
		for i, key := range s.keys {
			if i > 0 && key == s.keys[i-1] {
				s.cnt[len(s.cnt)-1]++
				continue
			}
			s.dkey = append(s.dkey, key)
			s.cnt = append(s.cnt, 1)
		}
	}
	n := len(s.dkey)
	s.val = resize(s.val, n)
	s.p0 = resize(s.p0, n+1)
	s.p1 = resize(s.p1, n+1)
	s.p2 = resize(s.p2, n+1)
	var a0, a1, a2 float64
	s.p0[0], s.p1[0], s.p2[0] = 0, 0, 0
	for i, key := range s.dkey {
		v := halfTable[keyHalf(key)]
		c := s.cnt[i]
		s.val[i] = v
		a0 += c
		a1 += c * v
		a2 += c * v * v
		s.p0[i+1], s.p1[i+1], s.p2[i+1] = a0, a1, a2
	}
}

// cost is the squared error of one cluster holding distinct values [a, b).
func (s *oldSolver) cost(a, b int) float64 {
	return rangeCost(s.p0[b]-s.p0[a], s.p1[b]-s.p1[a], s.p2[b]-s.p2[a])
}

// sse is the squared error of the current cuts with exact cluster means.
func (s *oldSolver) sse() float64 {
	var e float64
	for j := 0; j < s.k; j++ {
		e += s.cost(s.cuts[j], s.cuts[j+1])
	}
	return e
}

// solveCuts finds the clustering of the current distinct values (n > k) and
// leaves it in s.cuts.
func (s *oldSolver) solveCuts() {
	n := len(s.val)
	if oldExactDistinct(s.k, n) {
		s.pos = resize(s.pos, n+1)
		for i := range s.pos {
			s.pos[i] = i
		}
		s.dpPositions(s.pos)
		return
	}
	// The largest number of candidate positions the budget allows.
	m := oldAtomsPerCluster * s.k
	for oldDpWork(s.k, m+m/4) <= oldDpBudget {
		m += m / 4
	}
	s.atoms(m)
	s.dpPositions(s.pos)
	s.polish()
}

// oldDpWork estimates the cost evaluations of the exact programme with k
// clusters over M candidate positions.
func oldDpWork(k, M int) int {
	lg := 1
	for 1<<lg < M {
		lg++
	}
	return k * M * lg
}

// oldExactDistinct reports whether a group with n distinct values is solved by
// the exact programme over every cut position.
func oldExactDistinct(k, n int) bool { return oldDpWork(k, n+1) <= oldDpBudget }

// atoms sets s.pos to about m candidate cut positions (distinct-value
// indices, first 0, last n). They are the boundaries of maximal runs of
// consecutive distinct values whose own squared error stays within a
// threshold τ, which spreads candidates where they matter for the error:
// densely in the bulk, one per isolated outlier. τ starts at cost(all)/m³
// (the error of m equal slices of a smooth density) and is rescaled, using
// that the run count goes as τ^(−1/3), until the count is within 30 % of m.
// If that fails it falls back to runs bounded by 1/m of the weight and of
// the value range.
func (s *oldSolver) atoms(m int) {
	n := len(s.val)
	fm := float64(m)
	tau := s.cost(0, n) / (fm * fm * fm)
	for try := 0; try < 8 && tau > 0; try++ {
		got := s.sseRuns(tau, 2*m)
		if got >= m*7/10 && got <= m*13/10 {
			return
		}
		f := float64(got) / fm
		tau *= min(max(f*f*f, 1.0/512), 512)
	}
	span := (s.val[n-1] - s.val[0]) / fm
	cmax := s.p0[n] / fm
	pos := append(s.pos[:0], 0)
	start := 0
	for i := 1; i < n; i++ {
		if s.p0[i+1]-s.p0[start] > cmax || s.val[i]-s.val[start] > span {
			pos = append(pos, i)
			start = i
		}
	}
	s.pos = append(pos, n)
}

// sseRuns sets s.pos to the boundaries of greedy runs whose squared error is
// at most tau and returns the number of runs, stopping early (with s.pos
// unusable) once it exceeds limit.
func (s *oldSolver) sseRuns(tau float64, limit int) int {
	n := len(s.val)
	pos := append(s.pos[:0], 0)
	start := 0
	p0, p1, p2 := s.p0[:n+1], s.p1[:n+1], s.p2[:n+1]
	for i := 1; i < n; i++ {
		c, d := p0[i+1]-p0[start], p1[i+1]-p1[start]
		if p2[i+1]-p2[start]-d*d/c > tau {
			pos = append(pos, i)
			start = i
			if len(pos) > limit {
				s.pos = pos
				return len(pos)
			}
		}
	}
	s.pos = append(pos, n)
	return len(s.pos) - 1
}

// dpPositions solves the k-cluster problem exactly when cuts may only fall on
// the positions pos (ascending, first 0, last n) and writes s.cuts. It is the
// O(k·M·log M) divide-and-conquer dynamic programme: the cluster cost obeys
// the quadrangle inequality, so the best last cut is monotone in the prefix
// length. Ties go to the smallest cut, which keeps the result deterministic.
func (s *oldSolver) dpPositions(pos []int) {
	k := s.k
	M := len(pos)
	s.a0 = resize(s.a0, M)
	s.a1 = resize(s.a1, M)
	s.a2 = resize(s.a2, M)
	for i, p := range pos {
		s.a0[i], s.a1[i], s.a2[i] = s.p0[p], s.p1[p], s.p2[p]
	}
	s.prev = resize(s.prev, M)
	s.cur = resize(s.cur, M)
	s.arg = resize(s.arg, k*M)
	for i := 0; i < M; i++ {
		s.prev[i] = rangeCost(s.a0[i], s.a1[i], s.a2[i])
	}
	clear(s.arg[:M]) // layer 0: the single cluster starts at position 0
	for m := 1; m < k; m++ {
		s.dcLayer(0, M-1, 0, M-1, s.arg[(m-1)*M:m*M], s.arg[m*M:(m+1)*M])
		s.prev, s.cur = s.cur, s.prev
	}
	s.cuts[k] = pos[M-1]
	i := M - 1
	for m := k - 1; m >= 1; m-- {
		i = int(s.arg[m*M+i])
		s.cuts[m] = pos[i]
	}
	s.cuts[0] = 0
}

// dcLayer computes cur[x] = min over y ≤ x of prev[y] + cost(y, x) for x in
// [lo, hi], knowing the argmin lies in [optlo, opthi] and, for each x, at or
// after the previous layer's argmin parg[x] (the Knuth–Yao monotonicity of
// the last cut in the number of clusters).
func (s *oldSolver) dcLayer(lo, hi, optlo, opthi int, parg, arg []int32) {
	for lo <= hi {
		mid := int(uint(lo+hi) >> 1)
		first := max(optlo, int(parg[mid]))
		if first > min(mid, opthi) { // cannot happen under the quadrangle inequality; stay exact
			first = optlo
		}
		best, bj := math.Inf(1), first
		top := min(mid, opthi)
		c0, c1, c2 := s.a0[mid], s.a1[mid], s.a2[mid]
		// Non-empty clusters y < mid; positions are distinct, so the
		// weight c0−a0[j] is positive.
		if end := min(top, mid-1); first <= end {
			a0, a1, a2, prev := s.a0[first:end+1], s.a1[first:end+1], s.a2[first:end+1], s.prev[first:end+1]
			for j := range prev {
				d := c1 - a1[j]
				v := prev[j] + (c2 - a2[j]) - d*d/(c0-a0[j])
				if v < best {
					best, bj = v, j+first
				}
			}
		}
		if top == mid && s.prev[mid] < best { // empty last cluster
			best, bj = s.prev[mid], mid
		}
		s.cur[mid] = best
		arg[mid] = int32(bj)
		// Recurse on the smaller half, loop on the other.
		if mid-lo < hi-mid {
			s.dcLayer(lo, mid-1, optlo, bj, parg, arg)
			lo, optlo = mid+1, bj
		} else {
			s.dcLayer(mid+1, hi, bj, opthi, parg, arg)
			hi, opthi = mid-1, bj
		}
	}
}

// bandRange re-optimises cuts a..b (1 ≤ a ≤ b < k) exactly over all cut
// sets within ±w distinct values of the current ones, keeping cuts a−1 and
// b+1 fixed. It marks the cuts that move in moved and reports whether the
// squared error went down; the current cuts are inside the band, so it never
// goes up.
func (s *oldSolver) bandRange(w, a, b int, moved []bool) bool {
	n := len(s.val)
	lo, hi, off := s.bandLo, s.bandHi, s.bandOff
	left, right := s.cuts[a-1], s.cuts[b+1]
	lo[a-1], hi[a-1] = left, left
	lo[b+1], hi[b+1] = right, right
	for m := a; m <= b; m++ {
		c := s.cuts[m]
		lo[m] = max(c-w, lo[m-1], left)
		hi[m] = min(max(c+w, hi[m-1]), right, n)
	}
	off[a-1] = 0
	for m := a - 1; m <= b+1; m++ {
		off[m+1] = off[m] + hi[m] - lo[m] + 1
	}
	tot := off[b+2]
	s.bandF = resize(s.bandF, tot)
	s.bandA = resize(s.bandA, tot)
	s.bandF[0] = 0
	for m := a; m <= b+1; m++ {
		s.bandLayer(lo[m], hi[m], lo[m-1], hi[m-1], off[m-1], off[m])
	}
	var old float64
	for m := a - 1; m <= b; m++ {
		old += s.cost(s.cuts[m], s.cuts[m+1])
	}
	if !(s.bandF[off[b+1]] < old) {
		return false
	}
	x := right
	for m := b + 1; m > a; m-- {
		y := int(s.bandA[off[m]+x-lo[m]])
		if s.cuts[m-1] != y {
			s.cuts[m-1] = y
			moved[m-1] = true
		}
		x = y
	}
	return true
}

// polish improves the cuts with band passes until a full pass finds nothing.
// After a full pass only the neighbourhoods of cuts that moved are redone,
// then a full pass checks again.
func (s *oldSolver) polish() {
	k := s.k
	s.moved = resize(s.moved, k+1)
	s.next = resize(s.next, k+1)
	const margin = 2
	passes := 0
	for passes < oldMaxBandPasses {
		clear(s.moved)
		passes++
		if !s.bandRange(oldBandWidth, 1, k-1, s.moved) {
			return
		}
		for improved := true; improved && passes < oldMaxBandPasses; {
			improved = false
			clear(s.next)
			for m := 1; m < k; {
				if !s.moved[m] {
					m++
					continue
				}
				// One segment: moved cuts no more than 2·margin apart, plus
				// margin cuts either side.
				last := m
				for j := m + 1; j < k && j <= last+2*margin+1; j++ {
					if s.moved[j] {
						last = j
					}
				}
				a, b := max(m-margin, 1), min(last+margin, k-1)
				passes++
				if s.bandRange(oldBandWidth, a, b, s.next) {
					improved = true
				}
				m = b + 1
			}
			s.moved, s.next = s.next, s.moved
		}
	}
}

// bandLayer fills layer m of the band DP for x in [a, b] from the previous
// layer's window [pa, pb] (stored at offset poff; this layer at coff).
func (s *oldSolver) bandLayer(a, b, pa, pb, poff, coff int) {
	type span struct{ a, b, oa, ob int }
	var stack [64]span
	sp := 0
	stack[sp] = span{a, b, pa, pb}
	sp++
	F, A := s.bandF, s.bandA
	for sp > 0 {
		sp--
		t := stack[sp]
		if t.a > t.b {
			continue
		}
		x := int(uint(t.a+t.b) >> 1)
		best, by := math.Inf(1), t.oa
		top := min(t.ob, x)
		c0, c1, c2 := s.p0[x], s.p1[x], s.p2[x]
		for y := t.oa; y <= top; y++ {
			v := F[poff+y-pa] + rangeCost(c0-s.p0[y], c1-s.p1[y], c2-s.p2[y])
			if v < best {
				best, by = v, y
			}
		}
		F[coff+x-a] = best
		A[coff+x-a] = int32(by)
		stack[sp] = span{t.a, x - 1, t.oa, by}
		stack[sp+1] = span{x + 1, t.b, by, t.ob}
		sp += 2
	}
}

// finish turns s.means (ascending, k entries) into the LUT: each centroid is
// rounded to the nearest half value, then every distinct value is assigned
// to the nearest LUT entry (ties to the lower index). It returns the squared
// error of that assignment.
func (s *oldSolver) finish() float64 {
	for j, m := range s.means {
		h := uint16(fp16.FromFloat64(m))
		s.lut[j] = h
		s.lutV[j] = halfTable[h]
	}
	return s.assign()
}

// assign maps each distinct value to its nearest LUT entry and returns the
// squared error. s.lutV must be ascending.
func (s *oldSolver) assign() float64 {
	n := len(s.val)
	s.index = resize(s.index, n)
	L := s.lutV
	j := 0
	var e float64
	for i, v := range s.val {
		for {
			nj := j + 1
			for nj < len(L) && L[nj] == L[j] {
				nj++
			}
			if nj < len(L) && math.Abs(v-L[nj]) < math.Abs(v-L[j]) {
				j = nj
				continue
			}
			break
		}
		s.index[i] = uint8(j)
		d := v - L[j]
		e += s.cnt[i] * d * d
	}
	return e
}

// solveGroup palettizes one group: w holds its half weights, lut receives k
// half values and idx one index per weight. It returns the squared error, or
// ok false (and touches neither lut nor idx) if a weight is not finite.
func (s *oldSolver) solveGroup(w []uint16, lut []uint16, idx []uint8) (sse float64, ok bool) {
	s.distinct(w)
	n := len(s.val)
	if n == 0 {
		return 0, true
	}
	if s.dkey[0] <= keyNegNonFinite || s.dkey[n-1] >= keyPosNonFinite {
		return 0, false
	}
	var e float64
	if n <= s.k {
		// Exact: one LUT entry per distinct value, padded with the largest.
		for j := 0; j < s.k; j++ {
			h := keyHalf(s.dkey[min(j, n-1)])
			s.lut[j] = h
			s.lutV[j] = halfTable[h]
		}
		e = s.assign()
	} else {
		s.solveCuts()
		s.meansFromCuts()
		e = s.finish()
	}
	copy(lut, s.lut)
	for i, key := range s.dkey {
		s.byKey[key] = s.index[i]
	}
	for i, x := range w {
		idx[i] = s.byKey[orderKey(x)]
	}
	return e, true
}

// meansFromCuts sets each centroid to its cluster mean. An empty cluster
// (possible only after a stalled search) takes the previous centroid so the
// centroids stay ascending.
func (s *oldSolver) meansFromCuts() {
	for j := 0; j < s.k; j++ {
		a, b := s.cuts[j], s.cuts[j+1]
		switch {
		case a < b:
			s.means[j] = (s.p1[b] - s.p1[a]) / (s.p0[b] - s.p0[a])
		case j > 0:
			s.means[j] = s.means[j-1]
		default:
			s.means[j] = s.val[0]
		}
	}
}

// oldPalettize is Palettize as it was with the baseline solver: the
// reference the tests compare today's output with.
func oldPalettize(w []uint16, shape []int64, opts Options) (*Palette, error) {
	if err := check(w, shape, &opts); err != nil {
		return nil, err
	}
	p := newPalette(w, shape, opts)
	groups := p.Groups()
	per := len(w) / groups
	k := 1 << opts.Bits
	var next atomic.Int64
	var bad atomic.Bool
	var wg sync.WaitGroup
	for range min(opts.Workers, groups) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newOldSolver(opts.Bits)
			for !bad.Load() {
				g := int(next.Add(1) - 1)
				if g >= groups {
					return
				}
				if _, ok := s.solveGroup(w[g*per:(g+1)*per], p.LUT[g*k:(g+1)*k], p.Indices[g*per:(g+1)*per]); !ok {
					bad.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() {
		return nil, nonFinite(w)
	}
	return p, nil
}

// optimumSSE is the exact k-means optimum (before fp16 rounding) of the
// group w, by the baseline's dynamic programme over every cut position:
// O(k·n·log n), the reference for the solver's exactness.
func optimumSSE(w []uint16, bits int) float64 {
	s := newOldSolver(bits)
	s.distinct(w)
	if len(s.val) <= s.k {
		return 0
	}
	s.pos = resize(s.pos, len(s.val)+1)
	for i := range s.pos {
		s.pos[i] = i
	}
	s.dpPositions(s.pos)
	return s.sse()
}
