package quant

import (
	"math"
	"slices"

	"github.com/anemll/anemll/internal/fp16"
)

// This file holds the per-group solver: weighted 1-D k-means over the sorted
// distinct fp16 values of one group, solved exactly. Prefix sums of count,
// count·v and count·v² make the mean and the squared error of any run of
// consecutive distinct values an O(1) computation, and in 1-D every k-means
// optimum assigns contiguous runs of sorted values to each centroid, so a
// solution is just k−1 cut positions among the n distinct values.
//
// The cluster cost obeys the quadrangle inequality (it is concave Monge), and
// the solver uses two consequences of that:
//
//   - Penalised problem. Minimising Σ cost + λ·(number of clusters) over
//     partitions with any number of clusters is a 1-D least-weight-subsequence
//     problem, solved exactly in one left-to-right pass with a queue of
//     candidate cluster starts (a later start, once better, stays better).
//     Its solution, with k₀ clusters, is an optimal k₀-clustering. λ is
//     searched (a handful of passes) until k₀ = k.
//   - Interlacing. The optimal cuts for k and for k₀ clusters interlace:
//     cut m for k clusters lies between cuts m and m+(k₀−k) of the k₀
//     solution when k₀ > k (between cuts m−(k−k₀) and m when k₀ < k). When
//     the λ search stops short of k, an exact dynamic programme restricted to
//     those windows finishes the job.
//
// Every step costs O(n) or O(n log n) evaluations with small constants, and n
// is at most the group's size; no step's work grows with the 65,536 possible
// fp16 values (the per-worker count table is touched only where the group's
// values fall). On groups with few distinct values per LUT entry, a final
// polish re-optimises the cuts for the error after fp16 rounding of the
// centroids, keeping the result only if that error goes down.

// halfTable widens every half bit pattern to float64 (exactly).
var halfTable = func() *[1 << 16]float64 {
	var t [1 << 16]float64
	for i := range t {
		t[i] = float64(fp16.ToFloat32(fp16.Bits(i)))
	}
	return &t
}()

// orderKey maps a finite half bit pattern to a key whose unsigned order is the
// numeric order of the values; −0 is folded onto +0.
func orderKey(h uint16) uint16 {
	if h == 0x8000 {
		h = 0
	}
	// Branch-free: flip all bits of negatives, only the sign of positives.
	return h ^ (uint16(int16(h)>>15) | 0x8000)
}

// Order keys of non-finite halves: negative ones sort at or below
// keyNegNonFinite, positive ones at or above keyPosNonFinite.
const (
	keyNegNonFinite = 0x03ff
	keyPosNonFinite = 0xfc00
)

// keyHalf inverts orderKey.
func keyHalf(k uint16) uint16 {
	if k&0x8000 != 0 {
		return k ^ 0x8000
	}
	return ^k
}

const (
	// maxPenaltyPasses bounds the λ search of one group.
	maxPenaltyPasses = 8
	// bandEvalsPerPass is about how many band-programme cost evaluations
	// take as long as a penalised pass spends per distinct value (measured
	// on BF16 and fp16 groups of 1 024 to 16 384 weights).
	bandEvalsPerPass = 6
)

// solver holds one worker's scratch space. It is reused across groups and
// its results do not depend on what it solved before.
type solver struct {
	k int // number of LUT entries, 2^bits

	// scale multiplies initialPenalty (Palettize sets it per tensor from
	// the first group); hitRatio is λ/initial λ when a penalised pass last
	// hit k clusters, 0 if the last group needed the band.
	scale, hitRatio float64
	// cutSSE is the error before rounding of the clustering solveCuts
	// found for the last group, −1 if that group needed none.
	cutSSE float64

	tab       []uint32 // per half bit pattern count, all zero between groups
	keys, tmp []uint16 // distinct halves of the group, then order keys radix-sorted

	dkey []uint16  // distinct order keys, ascending
	val  []float64 // their values
	cnt  []float64 // their counts
	p0   []float64 // prefix sums of cnt, len n+1
	p1   []float64 // prefix sums of cnt·val
	p2   []float64 // prefix sums of cnt·val²

	cuts  []int     // cluster j covers distinct values [cuts[j], cuts[j+1])
	means []float64 // centroid values, ascending

	// Penalised pass scratch (indexed by prefix length 0..n).
	pe   []float64 // best penalised cost of the prefix
	pp   []int32   // start of its last cluster
	dq   []int32   // candidate starts
	dst  []int32   // first prefix length each candidate is best for
	low  []int     // cuts of the closest solution with fewer clusters than k
	high []int     // cuts of the closest solution with more clusters than k
	tmpc []int     // cuts of the last penalised solution; roundPolish's candidate

	// Band programme scratch.
	bandLo  []int
	bandHi  []int
	bandOff []int
	bandF   []float64
	bandA   []int32

	lut   []uint16  // candidate LUT (half bits), ascending
	lutV  []float64 // its values
	index []uint8   // per distinct value: LUT index

	prevLUT []uint16 // roundPolish's scratch
	prevIdx []uint8
	byHalf  [1 << 16]uint8 // per half bit pattern: LUT index (setIndices)
}

func newSolver(bits int) *solver { return newSolverK(1 << bits) }

// newSolverK makes a solver for k clusters (k need not be a power of 2;
// windowCentre uses k ± 1).
func newSolverK(k int) *solver {
	return &solver{
		k:       k,
		scale:   1,
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
// values. Counts go into a per-worker table indexed by the half's bit
// pattern, the patterns seen are listed as they first appear (a branch-free
// append), −0 is folded onto +0, and only that list (the distinct values) is
// turned into order keys and sorted, by a two-pass LSD radix sort on bytes;
// the table entries used are reset afterwards. So the work is proportional
// to the group's size, not to the 65,536 possible halves.
func (s *solver) distinct(w []uint16) {
	if s.tab == nil {
		s.tab = make([]uint32, 1<<16)
	}
	tab := (*[1 << 16]uint32)(s.tab)
	s.keys = resize(s.keys, len(w)+1)
	keys := s.keys[:len(w)+1]
	n := 0
	for _, x := range w {
		c := tab[x]
		keys[n] = x
		n += int((c - 1) >> 31) // 1 if c == 0 (a count never reaches 2³¹)
		tab[x] = c + 1
	}
	keys = keys[:n]
	if c := tab[0x8000]; c != 0 { // fold −0 onto +0
		tab[0x8000] = 0
		i := slices.Index(keys, 0x8000)
		if tab[0] == 0 {
			keys[i] = 0
		} else {
			keys[i] = keys[n-1]
			n--
			keys = keys[:n]
		}
		tab[0] += c
	}
	for i, h := range keys {
		keys[i] = orderKey(h)
	}
	radixKeys(keys, &s.tmp)
	s.dkey = resize(s.dkey, n)
	s.val = resize(s.val, n)
	s.cnt = resize(s.cnt, n)
	s.p0 = resize(s.p0, n+1)
	s.p1 = resize(s.p1, n+1)
	s.p2 = resize(s.p2, n+1)
	dkey, val, cnt := s.dkey[:n], s.val[:n], s.cnt[:n]
	p0, p1, p2 := s.p0[:n+1], s.p1[:n+1], s.p2[:n+1]
	copy(dkey, keys)
	p0[0], p1[0], p2[0] = 0, 0, 0
	var b0, b1, b2 float64
	for i, key := range dkey {
		h := keyHalf(key)
		v := halfTable[h]
		c := float64(tab[h])
		tab[h] = 0
		val[i], cnt[i] = v, c
		b0 += c
		b1 += c * v
		b2 += c * v * v
		p0[i+1], p1[i+1], p2[i+1] = b0, b1, b2
	}
}

// setIndices writes each weight's LUT index (s.index of its distinct
// value) to idx, through a table indexed by half bit pattern.
func (s *solver) setIndices(w []uint16, idx []uint8) {
	by := &s.byHalf
	for i, key := range s.dkey {
		by[keyHalf(key)] = s.index[i]
	}
	by[0x8000] = by[0] // −0 takes +0's entry (stale only if neither occurs)
	idx = idx[:len(w)]
	i := 0
	for ; i+4 <= len(w); i += 4 {
		x, d := w[i:i+4:i+4], idx[i:i+4:i+4]
		d[0], d[1], d[2], d[3] = by[x[0]], by[x[1]], by[x[2]], by[x[3]]
	}
	for ; i < len(w); i++ {
		idx[i] = by[w[i]]
	}
}

// resize returns a slice of length n, reusing x's storage when it can.
func resize[T any](x []T, n int) []T {
	if cap(x) < n {
		return make([]T, n)
	}
	return x[:n]
}

// cost is the squared error of one cluster holding distinct values [a, b).
func (s *solver) cost(a, b int) float64 {
	return rangeCost(s.p0[b]-s.p0[a], s.p1[b]-s.p1[a], s.p2[b]-s.p2[a])
}

// rangeCost is the squared error about the mean of a set with weight c, sum d
// and sum of squares e.
func rangeCost(c, d, e float64) float64 {
	if c == 0 {
		return 0
	}
	r := e - d*d/c
	if r < 0 {
		return 0
	}
	return r
}

// sse is the squared error of the current cuts with exact cluster means.
func (s *solver) sse() float64 {
	var e float64
	for j := 0; j < s.k; j++ {
		e += s.cost(s.cuts[j], s.cuts[j+1])
	}
	return e
}

// windowCentre returns, for the group last solved (n > k distinct values,
// still in s), the geometric centre of the range of λ whose penalised
// optimum has exactly k clusters, relative to the group's initialPenalty at
// scale 1; ok is false if the range is degenerate. By the convexity of the
// optimal error F in the number of clusters, that range is
// [F(k) − F(k+1), F(k−1) − F(k)], so it costs an exact solve with k − 1 and
// one with k + 1 clusters. Palettize uses it to aim the first penalised
// pass of a tensor's other groups at the middle of their ranges rather than
// wherever group 0's search happened to land.
func (s *solver) windowCentre() (ratio float64, ok bool) {
	n, k := len(s.val), s.k
	if k < 2 || n <= k+1 {
		return 0, false
	}
	f := func(kk int) float64 {
		t := newSolverK(kk)
		t.val, t.cnt, t.p0, t.p1, t.p2 = s.val, s.cnt, s.p0, s.p1, s.p2
		if kk == 1 {
			return t.cost(0, n)
		}
		t.solveCuts()
		return t.sse()
	}
	fk := s.cutSSE
	if fk < 0 {
		return 0, false
	}
	lo, hi := fk-f(k+1), f(k-1)-fk
	lam0 := s.initialPenalty()
	if !(lo > 0 && hi >= lo && lam0 > 0) {
		return 0, false
	}
	r := math.Sqrt(lo*hi) / lam0
	if math.IsInf(r, 0) || !(r > 0) {
		return 0, false
	}
	return r, true
}

// solveCuts finds an optimal clustering of the current distinct values
// (n > k) and leaves it in s.cuts.
func (s *solver) solveCuts() {
	n, k := len(s.val), s.k
	lam0 := s.initialPenalty() * s.scale
	lam := lam0
	s.low = resize(s.low, k+1)
	s.high = resize(s.high, k+1)
	kLow, kHigh := 0, 0 // cluster counts of s.low and s.high; 0 = none yet
	var fLow, fHigh float64
	prevK, prevLam := 0, 0.0 // the previous pass, for the secant step
	for pass := 0; pass < maxPenaltyPasses; pass++ {
		k0, f := s.penalised(lam)
		if k0 == k {
			s.cuts = s.cuts[:k+1]
			copy(s.cuts, s.tmpc[:k+1])
			s.hitRatio = lam / lam0
			return
		}
		progressed := false
		if k0 < k && k0 > kLow {
			kLow, fLow = k0, f
			s.low = resize(s.low, k0+1)
			copy(s.low, s.tmpc[:k0+1])
			progressed = true
		}
		if k0 > k && (kHigh == 0 || k0 < kHigh) {
			kHigh, fHigh = k0, f
			s.high = resize(s.high, k0+1)
			copy(s.high, s.tmpc[:k0+1])
			progressed = true
		}
		if !progressed || s.windows(kLow, kHigh) < n {
			break
		}
		switch {
		case kLow > 0 && kHigh > 0:
			// The slope of the chord between the two solutions: the
			// penalised optimum there lies strictly between them, unless
			// every count between is on the chord.
			lam = (fLow - fHigh) / float64(kHigh-kLow)
		default:
			// One side only: k(λ) ≈ c·λ^(−α); α from the last two passes
			// when they differ (a secant step in log–log), else 1/3 (the
			// k⁻² fall of the error).
			alpha := 1.0 / 3
			if prevK != 0 && prevK != k0 && prevLam != lam {
				alpha = min(max(math.Log(float64(prevK)/float64(k0))/math.Log(lam/prevLam), 0.1), 1)
			}
			prevK, prevLam = k0, lam
			lam *= min(max(math.Pow(float64(k0)/float64(k), 1/alpha), 1.0/64), 64)
		}
		if !(lam > 0) || math.IsInf(lam, 0) {
			break
		}
	}
	s.windows(kLow, kHigh)
	s.band(s.bandLo[:k+1], s.bandHi[:k+1])
}

// windows sets s.bandLo/s.bandHi to the windows the optimal cuts lie in,
// from the interlacing with the solutions found so far (kLow and kHigh
// clusters, 0 for none), and returns the band programme's estimated cost
// in units of one penalised pass per distinct value: a layer of width w
// costs about w·log₂ w evaluations, each about a fifth of a pass's work per
// value.
func (s *solver) windows(kLow, kHigh int) int {
	n, k := len(s.val), s.k
	lo, hi := s.bandLo[:k+1], s.bandHi[:k+1]
	for m := 0; m <= k; m++ {
		lo[m], hi[m] = 0, n
	}
	if kHigh > 0 {
		d := kHigh - k
		for m := 1; m < k; m++ {
			lo[m] = max(lo[m], s.high[m])
			hi[m] = min(hi[m], s.high[m+d])
		}
	}
	if kLow > 0 {
		d := k - kLow
		for m := 1; m < k; m++ {
			lo[m] = max(lo[m], s.low[max(m-d, 0)])
			hi[m] = min(hi[m], s.low[min(m, kLow)])
		}
	}
	lo[0], hi[0], lo[k], hi[k] = 0, 0, n, n
	for m := 1; m <= k; m++ { // keep the windows monotone
		lo[m] = max(lo[m], lo[m-1])
	}
	for m := k - 1; m >= 0; m-- {
		hi[m] = min(hi[m], hi[m+1])
	}
	for m := 1; m < k; m++ {
		if hi[m] < lo[m] { // cannot happen if the interlacing holds; stay exact
			for j := 1; j < k; j++ {
				lo[j], hi[j] = 0, n
			}
			break
		}
	}
	cost := 0
	for m := 1; m <= k; m++ {
		w := hi[m] - lo[m] + 1
		lg := 1
		for 1<<lg < w {
			lg++
		}
		cost += w * lg
	}
	return cost / bandEvalsPerPass
}

// penaltyScale calibrates initialPenalty per bit width: the ratio of the λ
// that gives k clusters to 2·Fq/k, with Fq the error of the equal-weight
// partition, measured on Gaussian fp16 and BF16 groups and on the bundled
// model's tensors (the quantile partition's excess error grows with k, so
// the ratio falls). Any value gives exact results; a good one saves passes.
var penaltyScale = [9]float64{1: 0.55, 2: 0.55, 3: 0.42, 4: 0.33, 5: 0.2, 6: 0.14, 7: 0.07, 8: 0.042}

// initialPenalty estimates the λ at which the penalised optimum has k
// clusters: the marginal gain of the k-th cluster, about 2·F(k)/k when the
// optimal error F falls off as k⁻², with F estimated from the equal-weight
// (quantile) partition and penaltyScale.
func (s *solver) initialPenalty() float64 {
	n, k := len(s.val), s.k
	total := s.p0[n]
	var f float64
	a := 0
	for j := 1; j <= k; j++ {
		b := n
		if j < k {
			target := total * float64(j) / float64(k)
			lo, hi := a, n
			for lo < hi {
				mid := int(uint(lo+hi) >> 1)
				if s.p0[mid] < target {
					lo = mid + 1
				} else {
					hi = mid
				}
			}
			b = lo
		}
		f += s.cost(a, b)
		a = b
	}
	bits := 0
	for 1<<bits < k {
		bits++
	}
	lam := 2 * penaltyScale[min(bits, 8)] * f / float64(k)
	if !(lam > 0) {
		lam = s.cost(0, n) / float64(k*k*k) // degenerate quantiles
	}
	if !(lam > 0) {
		lam = math.SmallestNonzeroFloat64
	}
	return lam
}

// probes is how many positions past a queue tail's first prefix penalised
// tests without branches for where a new start overtakes it (the offset is
// at most 7 for about 90 % of starts on real weights).
const probes = 7

// penalised solves min over partitions of Σ cost + lam·clusters exactly and
// leaves the cuts of the solution in s.tmpc (tmpc[0] = 0 … tmpc[k₀] = n). It
// returns k₀ and the solution's squared error (without the penalty).
//
// It is the concave least-weight-subsequence algorithm: pe[x] is the best
// penalised cost of the first x distinct values. Candidate starts y of the
// last cluster are kept in a queue, each with the first x it is best for;
// by the quadrangle inequality a later start that is at least as good at
// some x stays so for every larger x, so each new start pops the queue's
// tail while it wins at the tail's first x, then finds (by galloping and
// bisection) where it overtakes the last remaining one.
func (s *solver) penalised(lam float64) (int, float64) {
	n := len(s.val)
	s.pe = resize(s.pe, n+1)
	s.pp = resize(s.pp, n+1)
	s.dq = resize(s.dq, n+1)
	s.dst = resize(s.dst, n+1)
	pe, pp, dq, dst := s.pe[:n+1], s.pp[:n+1], s.dq[:n+1], s.dst[:n+1]
	p0, p1, p2 := s.p0[:n+1], s.p1[:n+1], s.p2[:n+1]
	// f is the penalised cost of prefix x when its last cluster starts at y.
	f := func(y, x int) float64 {
		c, d := p0[x]-p0[y], p1[x]-p1[y]
		return pe[y] + (p2[x] - p2[y]) - d*d/c
	}
	pe[0], pp[0] = 0, 0
	h, t := 0, 1
	dq[0], dst[0] = 0, 1
	for x := 1; x <= n; x++ {
		// The head moves on by one start per value or so: the first step
		// is arithmetic, a second one is rare.
		if h+1 < t {
			h += int(uint(int(dst[h+1])-x-1) >> 63) // 1 if dst[h+1] ≤ x
		}
		for h+1 < t && int(dst[h+1]) <= x {
			h++
		}
		y := int(dq[h])
		pe[x] = f(y, x) + lam
		pp[x] = int32(y)
		if x == n {
			break
		}
		// Insert start x against the tail b. Merging [b, x) (weight n1,
		// sum s1) into a cluster [x, q) (weight n2, sum s2) raises its
		// cost by (s1·n2 − s2·n1)² / (n1·n2·(n1+n2)), which grows with q;
		// x beats b at q iff that rise exceeds T = pe[x] − pe[b] −
		// cost(b, x). Multiplied out by n1 the test needs no division.
		a0, a1 := p0[x], p1[x]
		hi := 0 // where x starts to win; 0: never
		for t > h {
			b := int(dq[t-1])
			s0 := max(int(dst[t-1]), x+1)
			n1, s1 := a0-p0[b], a1-p1[b]
			tn := (pe[x]-pe[b]-(p2[x]-p2[b]))*n1 + s1*s1 // T·n1
			// T < 0: x wins from s0 on (the rise is never negative).
			if tn < 0 {
				t--
				hi = -1
				continue
			}
			wins := func(q int) bool {
				n2, s2 := p0[q]-a0, p1[q]-a1
				d := s1*n2 - s2*n1
				return d*d > tn*(n1+n2)*n2
			}
			if wins(s0) { // b is useless from s0 on
				t--
				hi = -1
				continue
			}
			lo := s0 // x loses at lo
			if s0+probes <= n {
				// Probe s0+1 … s0+probes without branches; wins is
				// monotone, so the number of losses is the offset of the
				// first win. A win is d² > rhs, i.e. rhs − d² < 0: its sign
				// bit is set (rhs and d² are finite and never −0, tn being
				// ≥ 0 here and n2 > 0).
				q0, q1 := p0[s0+1:s0+probes+1:s0+probes+1], p1[s0+1:s0+probes+1:s0+probes+1]
				tm := tn * n1
				// winA is the test of the first three probes (the form they
				// always used), winB that of wins: 1 if rhs − d² < 0.
				winA := func(n2, s2 float64) uint64 {
					d := s1*n2 - s2*n1
					return math.Float64bits((tm+tn*n2)*n2-d*d) >> 63
				}
				winB := func(n2, s2 float64) uint64 {
					d := s1*n2 - s2*n1
					return math.Float64bits(tn*(n1+n2)*n2-d*d) >> 63
				}
				won := winA(q0[0]-a0, q1[0]-a1) + winA(q0[1]-a0, q1[1]-a1) + winA(q0[2]-a0, q1[2]-a1) +
					winB(q0[3]-a0, q1[3]-a1) + winB(q0[4]-a0, q1[4]-a1) + winB(q0[5]-a0, q1[5]-a1) +
					winB(q0[6]-a0, q1[6]-a1)
				loss := probes - int(won)
				if loss < probes {
					hi = s0 + 1 + loss
					break
				}
				lo = s0 + probes
			} else if s0+3 <= n {
				q0, q1 := p0[s0+1:s0+4:s0+4], p1[s0+1:s0+4:s0+4]
				tm := tn * n1
				n2a, n2b, n2c := q0[0]-a0, q0[1]-a0, q0[2]-a0
				da := s1*n2a - (q1[0]-a1)*n1
				db := s1*n2b - (q1[1]-a1)*n1
				dc := s1*n2c - (q1[2]-a1)*n1
				loss := 0
				if !(da*da > (tm+tn*n2a)*n2a) {
					loss++
				}
				if !(db*db > (tm+tn*n2b)*n2b) {
					loss++
				}
				if !(dc*dc > (tm+tn*n2c)*n2c) {
					loss++
				}
				if loss < 3 {
					hi = s0 + 1 + loss
					break
				}
				lo = s0 + 3
			}
			// Farther: gallop, then bisect.
			hi = 0
			for step := 1; ; step *= 2 {
				q := lo + step
				if q >= n {
					if lo < n && wins(n) {
						hi = n
					}
					break
				}
				if wins(q) {
					hi = q
					break
				}
				lo = q
			}
			for hi > 0 && hi-lo > 1 {
				mid := int(uint(lo+hi) >> 1)
				if wins(mid) {
					hi = mid
				} else {
					lo = mid
				}
			}
			break
		}
		switch {
		case t == h:
			dq[t], dst[t] = int32(x), int32(x+1)
			t++
		case hi > 0:
			dq[t], dst[t] = int32(x), int32(hi)
			t++
		}
	}
	k0 := 0
	for x := n; x > 0; x = int(pp[x]) {
		k0++
	}
	s.tmpc = resize(s.tmpc, k0+1)
	x := n
	for j := k0; j > 0; j-- {
		s.tmpc[j] = x
		x = int(pp[x])
	}
	s.tmpc[0] = 0
	return k0, pe[n] - lam*float64(k0)
}

// band solves the k-cluster problem exactly over cut sets with cut m in
// [lo[m], hi[m]] (lo, hi ascending, lo[0] = hi[0] = 0, lo[k] = hi[k] = n)
// and writes s.cuts. Each layer is a row-minima problem whose argmin is
// monotone (the quadrangle inequality), solved by divide and conquer; ties
// go to the smallest cut.
func (s *solver) band(lo, hi []int) {
	k := s.k
	off := s.bandOff
	off[0] = 0
	for m := 0; m <= k; m++ {
		off[m+1] = off[m] + hi[m] - lo[m] + 1
	}
	tot := off[k+1]
	s.bandF = resize(s.bandF, tot)
	s.bandA = resize(s.bandA, tot)
	s.bandF[0] = 0
	for m := 1; m <= k; m++ {
		s.bandLayer(lo[m], hi[m], lo[m-1], hi[m-1], off[m-1], off[m])
	}
	s.cuts = s.cuts[:k+1]
	x := hi[k]
	s.cuts[k] = x
	for m := k; m > 0; m-- {
		x = int(s.bandA[off[m]+x-lo[m]])
		s.cuts[m-1] = x
	}
}

// bandLayer fills layer m of the band DP for x in [a, b] from the previous
// layer's window [pa, pb] (stored at offset poff; this layer at coff).
func (s *solver) bandLayer(a, b, pa, pb, poff, coff int) {
	type span struct{ a, b, oa, ob int }
	var stack [64]span
	sp := 0
	stack[sp] = span{a, b, pa, pb}
	sp++
	F, A := s.bandF, s.bandA
	p0, p1, p2 := s.p0, s.p1, s.p2
	for sp > 0 {
		sp--
		t := stack[sp]
		if t.a > t.b {
			continue
		}
		x := int(uint(t.a+t.b) >> 1)
		// The minimum without branches: every candidate is ≥ +0 (or +Inf),
		// and such floats order as their bit patterns do as integers.
		bestb, by := math.Float64bits(math.Inf(1)), t.oa
		top := min(t.ob, x)
		c0, c1, c2 := p0[x], p1[x], p2[x]
		for y := t.oa; y <= top; y++ {
			vb := math.Float64bits(F[poff+y-pa] + rangeCost(c0-p0[y], c1-p1[y], c2-p2[y]))
			lt := int64(vb-bestb) >> 63 // −1 if vb < bestb
			bestb ^= (bestb ^ vb) & uint64(lt)
			by ^= (by ^ y) & int(lt)
		}
		best := math.Float64frombits(bestb)
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
func (s *solver) finish() float64 {
	for j, m := range s.means {
		h := uint16(fp16.FromFloat64(m))
		s.lut[j] = h
		s.lutV[j] = halfTable[h]
	}
	return s.assign()
}

// roundBand is the ± window, in distinct values around each cut, of
// roundPolish.
const roundBand = 2

// maxRoundPasses bounds the roundPolish passes of one group.
const maxRoundPasses = 8

// roundPolishPerEntry: roundPolish runs on groups with fewer distinct values
// than this per LUT entry, where fp16 rounding of the centroids is a
// noticeable part of the error and equally good clusterings (ties) abound.
const roundPolishPerEntry = 8

// roundPolish re-optimises the cuts for the error the palette really has:
// each cluster's centroid is its mean rounded to fp16, so a cluster over
// [y, x) costs Σ cnt·(v − r)² with r = fp16(mean). An exact dynamic
// programme over every cut set within ±roundBand distinct values of the
// current cuts minimises the sum of those costs; its result is kept only if,
// after nearest-entry reassignment, the squared error e of the current LUT
// strictly goes down, so a palette never gets worse. It returns the error.
func (s *solver) roundPolish(e float64) float64 {
	k, n := s.k, len(s.val)
	w := roundBand
	lo, hi := s.bandLo[:k+1], s.bandHi[:k+1]
	lo[0], hi[0], lo[k], hi[k] = 0, 0, n, n
	for m := 1; m < k; m++ {
		lo[m] = max(s.cuts[m]-w, lo[m-1]+1)
		hi[m] = min(s.cuts[m]+w, n-(k-m))
	}
	for m := k - 1; m >= 1; m-- {
		hi[m] = min(hi[m], hi[m+1]-1)
	}
	off := s.bandOff
	off[0] = 0
	for m := 0; m <= k; m++ {
		off[m+1] = off[m] + hi[m] - lo[m] + 1
	}
	s.bandF = resize(s.bandF, off[k+1])
	s.bandA = resize(s.bandA, off[k+1])
	F, A := s.bandF, s.bandA
	F[0] = 0
	p0, p1, p2 := s.p0, s.p1, s.p2
	for m := 1; m <= k; m++ {
		for x := lo[m]; x <= hi[m]; x++ {
			best, by := math.Inf(1), -1
			for y := lo[m-1]; y <= min(hi[m-1], x-1); y++ {
				c, d := p0[x]-p0[y], p1[x]-p1[y]
				r := halfTable[uint16(fp16.FromFloat64(d/c))]
				v := F[off[m-1]+y-lo[m-1]] + (p2[x] - p2[y]) - 2*r*d + r*r*c
				if v < best {
					best, by = v, y
				}
			}
			F[off[m]+x-lo[m]] = best
			A[off[m]+x-lo[m]] = int32(by)
		}
	}
	s.tmpc = resize(s.tmpc, k+1)
	x := n
	s.tmpc[k] = n
	for m := k; m > 0; m-- {
		x = int(A[off[m]+x-lo[m]])
		if x < 0 {
			return e // no feasible cut set (cannot happen: the current one is)
		}
		s.tmpc[m-1] = x
	}
	if slices.Equal(s.tmpc[:k+1], s.cuts[:k+1]) {
		return e
	}
	if cap(s.prevLUT) < k {
		s.prevLUT = make([]uint16, k)
	}
	prev := s.prevLUT[:k]
	copy(prev, s.lut)
	s.prevIdx = append(s.prevIdx[:0], s.index...)
	for j := 0; j < k; j++ {
		a, b := s.tmpc[j], s.tmpc[j+1]
		h := uint16(fp16.FromFloat64((p1[b] - p1[a]) / (p0[b] - p0[a])))
		s.lut[j] = h
		s.lutV[j] = halfTable[h]
	}
	if ne := s.assign(); ne < e {
		copy(s.cuts, s.tmpc[:k+1])
		return ne
	}
	copy(s.lut, prev)
	for j, h := range s.lut {
		s.lutV[j] = halfTable[h]
	}
	copy(s.index, s.prevIdx)
	return e
}

// assign maps each distinct value to its nearest LUT entry and returns the
// squared error. s.lutV must be ascending.
func (s *solver) assign() float64 {
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
func (s *solver) solveGroup(w []uint16, lut []uint16, idx []uint8) (sse float64, ok bool) {
	s.distinct(w)
	n := len(s.val)
	if n == 0 {
		return 0, true
	}
	if s.dkey[0] <= keyNegNonFinite || s.dkey[n-1] >= keyPosNonFinite {
		return 0, false
	}
	var e float64
	s.cutSSE = -1
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
		s.cutSSE = s.sse()
		s.meansFromCuts()
		e = s.finish()
		for pass := 0; n < roundPolishPerEntry*s.k && pass < maxRoundPasses; pass++ {
			ne := s.roundPolish(e)
			if !(ne < e) {
				break
			}
			e = ne
		}
	}
	copy(lut, s.lut)
	s.setIndices(w, idx)
	return e, true
}

// meansFromCuts sets each centroid to its cluster mean. An empty cluster
// (possible only with ties in the band programme) takes the previous
// centroid so the centroids stay ascending.
func (s *solver) meansFromCuts() {
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

// loadCentred sets the solver's distinct values, weights and prefix sums
// to the ascending values x with weights c, shifted by their weighted mean
// (prefix sums of centred values lose less precision; cluster costs and
// cuts are the same).
func (s *solver) loadCentred(x, c []float64) {
	n := len(x)
	s.val = resize(s.val, n)
	s.cnt = resize(s.cnt, n)
	s.p0 = resize(s.p0, n+1)
	s.p1 = resize(s.p1, n+1)
	s.p2 = resize(s.p2, n+1)
	var c0, c1 float64
	for i, xi := range x {
		c0 += c[i]
		c1 += c[i] * xi
	}
	mu := c1 / c0
	var b0, b1, b2 float64
	s.p0[0], s.p1[0], s.p2[0] = 0, 0, 0
	for i, x0 := range x {
		ci := c[i]
		xi := x0 - mu
		s.val[i], s.cnt[i] = xi, ci
		b0 += ci
		b1 += ci * xi
		b2 += ci * xi * xi
		s.p0[i+1], s.p1[i+1], s.p2[i+1] = b0, b1, b2
	}
}

// centroids writes to out the fp16 palette of the clustering cuts (k+1
// positions) of the ascending values x with weights c: each cluster's
// weighted mean rounded to fp16, sorted ascending.
func centroids(x, c []float64, cuts []int, out []uint16) {
	for j := range len(cuts) - 1 {
		var s0, s1 float64
		for i := cuts[j]; i < cuts[j+1]; i++ {
			s0 += c[i]
			s1 += c[i] * x[i]
		}
		out[j] = f2h(s1 / s0)
	}
	slices.SortFunc(out, func(a, b uint16) int {
		x, y := halfTable[a], halfTable[b]
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
}
