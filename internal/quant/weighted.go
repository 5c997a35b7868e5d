package quant

import (
	"math"
	"slices"
)

// groupSolver holds one worker's scratch space for calibrated groups. Its
// results do not depend on what it solved before.
type groupSolver struct {
	st      *Stats
	fb      *feedback
	k, rows int
	in      int
	// lite selects the cheaper full-Gram schedule (see MaxLiteGramWork).
	lite bool
	ew   []float64 // lite: the group's errors, rows×in
	acc  []float64 // lite: per-row forms

	w    []float64 // the group's weights, rows×in
	wk   []float64 // GPTQ working copy, columns permuted
	idx  []uint8   // candidate indices
	e    []float64 // one row's error
	c    []float64 // in×k: H columns summed per palette entry
	m    []float64 // k×k normal matrix
	rhs  []float64
	pts  []wpoint
	arg  []int32
	prev []float64
	cur  []float64
	sol  *solver   // the exact solver's scratch, for exactCuts
	px   []float64 // exactCuts: the points' values and weights
	pc   []float64

	bits []uint16  // the group's fp16 weights
	r0   int       // its first row
	tab  []float64 // per order key: summed weight, zero between groups
	keys []uint16
	tmpk []uint16
	near []uint8 // per order key: nearest palette entry (assign)
}

// descentSweeps bounds the coordinate-descent sweeps per row.
const descentSweeps = 8

type wpoint struct{ x, c float64 }

// groupResult is one group's calibrated and uncalibrated error on H and
// its output energy.
type groupResult struct{ err, err0, ref float64 }

func newGroupSolver(st *Stats, fb *feedback, bits, rows, in int) *groupSolver {
	k := 1 << bits
	return &groupSolver{
		st: st, fb: fb, k: k, rows: rows, in: in,
		w: make([]float64, rows*in), wk: make([]float64, rows*in), idx: make([]uint8, rows*in),
		e: make([]float64, in), m: make([]float64, k*k), rhs: make([]float64, k),
	}
}

// candidate is a palette (ascending halves and their values) with indices.
type candidate struct {
	lut  []uint16
	val  []float64
	idx  []uint8
	err  float64
	have bool
}

// solve palettizes one group: w its fp16 weights (rows×in), r0 its first
// row (for row weights), lut0/idx0 the uncalibrated palette, lut/idx the
// output. The result is never worse on H than lut0/idx0.
func (g *groupSolver) solve(w []uint16, r0 int, lut0 []uint16, idx0 []uint8, lut []uint16, idx []uint8) groupResult {
	for i, h := range w {
		g.w[i] = h2f(h)
	}
	g.bits, g.r0 = w, r0
	val0 := make([]float64, g.k)
	for i, h := range lut0 {
		val0[i] = h2f(h)
	}
	err0 := g.groupErr(r0, idx0, val0)
	res := groupResult{err0: err0, ref: g.refErr(r0)}
	copy(lut, lut0)
	copy(idx, idx0)
	best := err0
	keep := func(l []uint16, v []float64, id []uint8) float64 {
		e := g.groupErr(r0, id, v)
		if e < best {
			best = e
			copy(lut, l)
			copy(idx, id)
		}
		return e
	}
	if g.st.Gram == nil {
		// Diagonal H: the error is Σ weight·e² per weight, which the
		// weighted k-means minimises exactly; nearest entries are then the
		// optimal indices, and one refit absorbs the fp16 rounding of the
		// centroids. The uncalibrated palette is already a candidate.
		// (PalettizeCalibrated takes diagSolver for this, the same
		// computation faster; this is its reference in the tests.)
		l := g.weightedKMeans(r0)
		v := halves(l)
		g.assign(v, g.idx)
		keep(l, v, g.idx)
		l, v = g.refit(r0, g.idx, l, v)
		g.assign(v, g.idx)
		keep(l, v, g.idx)
		res.err = best
		return res
	}
	// Both starts, up to maxRounds rounds with coordinate descent; the
	// lite schedule runs the weighted k-means start alone, liteRounds
	// rounds of feedback assignment and refit.
	starts := [][]uint16{g.weightedKMeans(r0), slices.Clone(lut0)}
	rounds := maxRounds
	if g.lite {
		starts, rounds = starts[:1], liteRounds
	}
	for _, start := range starts {
		l := start
		v := halves(l)
		prev := math.Inf(1)
		for range rounds {
			g.assign(v, g.idx)
			keep(l, v, g.idx)
			if !g.lite {
				g.descend(v, g.idx)
				keep(l, v, g.idx)
			}
			l, v = g.refit(r0, g.idx, l, v)
			e := keep(l, v, g.idx)
			if !(e < prev*(1-minGain)) {
				break
			}
			prev = e
		}
	}
	res.err = best
	return res
}

func halves(l []uint16) []float64 {
	v := make([]float64, len(l))
	for i, h := range l {
		v[i] = h2f(h)
	}
	return v
}

// nearest returns the index of the entry of the ascending table v closest
// to x (the lower one on ties).
func nearest(v []float64, x float64) int {
	lo, hi := 0, len(v)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if v[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	// v[lo] is the first entry ≥ x (or the last entry).
	if lo > 0 && x-v[lo-1] <= v[lo]-x {
		return lo - 1
	}
	return lo
}

// assign sets idx for the ascending palette v: with a GPTQ factor column by
// column in its order, each column's rounding error fed back onto the
// columns still to come; without one each weight takes its nearest entry
// (optimal when H is diagonal).
func (g *groupSolver) assign(v []float64, idx []uint8) {
	n := g.in
	if g.fb == nil {
		// Nearest entries, found once per distinct value (g.pts and their
		// order keys g.keys, from binned) and looked up by order key.
		if g.near == nil {
			g.near = make([]uint8, 1<<16)
		}
		for i, p := range g.pts {
			g.near[g.keys[i]] = uint8(nearest(v, p.x))
		}
		for i, h := range g.bits {
			idx[i] = g.near[orderKey(h)]
		}
		return
	}
	perm, u := g.fb.perm, g.fb.u
	for r := range g.rows {
		src, dst := g.w[r*n:(r+1)*n], g.wk[r*n:(r+1)*n]
		for a, j := range perm {
			dst[a] = src[j]
		}
	}
	for a := range n {
		urow := u[a*n+a+1 : a*n+n]
		uaa := u[a*n+a]
		for r := range g.rows {
			row := g.wk[r*n : (r+1)*n]
			x := row[a]
			q := nearest(v, x)
			idx[r*n+perm[a]] = uint8(q)
			e := (x - v[q]) / uaa
			if e == 0 {
				continue
			}
			rest := row[a+1:]
			for b := range rest {
				rest[b] -= e * urow[b]
			}
		}
	}
}

// descend improves the assignment idx for the palette v by exact
// coordinate descent on each row's error eᵀHe: every weight in turn takes
// the entry that lowers the error most given all others, the gradient
// H·e being updated after each change, for a few sweeps or until none
// changes. The error never rises.
func (g *groupSolver) descend(v []float64, idx []uint8) {
	n := g.in
	h := g.st.Gram
	if len(g.c) < n {
		g.c = make([]float64, n)
	}
	grad := g.c[:n]
	for r := range g.rows {
		ri := idx[r*n : (r+1)*n]
		wr := g.w[r*n : (r+1)*n]
		for j := range n {
			g.e[j] = wr[j] - v[ri[j]]
		}
		for i := range n {
			var s float64
			row := h[i*n : (i+1)*n]
			for j, e := range g.e {
				s += row[j] * e
			}
			grad[i] = s
		}
		for range descentSweeps {
			changed := false
			for j := range n {
				hjj := h[j*n+j]
				if hjj <= 0 {
					continue
				}
				cur := v[ri[j]]
				// Δ(eᵀHe) for e_j += δ, δ = cur − c: 2δ·grad_j + δ²·H_jj.
				// Its minimum over c is at the entry nearest cur + grad_j/H_jj.
				q := nearest(v, cur+grad[j]/hjj)
				d := cur - v[q]
				if q == int(ri[j]) || d == 0 || 2*d*grad[j]+d*d*hjj >= 0 {
					continue
				}
				ri[j] = uint8(q)
				g.e[j] += d
				col := h[j*n : (j+1)*n] // H symmetric: row j = column j
				for i, x := range col {
					grad[i] += d * x
				}
				changed = true
			}
			if !changed {
				break
			}
		}
	}
}

// groupErr is Σ_r rw_r (w_r−ŵ_r) H (w_r−ŵ_r)ᵀ for indices idx into v.
func (g *groupSolver) groupErr(r0 int, idx []uint8, v []float64) float64 {
	n := g.in
	if g.lite && g.st.Gram != nil {
		g.ew = resize(g.ew, g.rows*n)
		for i, a := range idx[:g.rows*n] {
			g.ew[i] = g.w[i] - v[a]
		}
		return g.rowsForm(r0, g.ew)
	}
	var tot float64
	for r := range g.rows {
		for j := range n {
			g.e[j] = g.w[r*n+j] - v[idx[r*n+j]]
		}
		tot += rowWeight(g.st, r0+r) * quadForm(g.st, g.e)
	}
	return tot
}

// rowsForm returns Σ_r rw_r e_r H e_rᵀ for the group's rows of e (rows×in)
// in one pass over the upper triangle of H: each H row is read once for
// all rows of the group, and each off-diagonal entry counts twice. The
// lite schedule's form (the full one keeps quadForm's summation order).
func (g *groupSolver) rowsForm(r0 int, e []float64) float64 {
	n, rows := g.in, g.rows
	h := g.st.Gram
	g.acc = resize(g.acc, rows)
	acc := g.acc
	clear(acc)
	for i := range n {
		hr := h[i*n+i+1 : (i+1)*n]
		hii := h[i*n+i]
		for r := range rows {
			er := e[r*n : (r+1)*n]
			x := er[i]
			if x == 0 {
				continue
			}
			rest := er[i+1:]
			rest = rest[:len(hr)]
			var t0, t1 float64
			j := 0
			for ; j+2 <= len(hr); j += 2 {
				t0 += hr[j] * rest[j]
				t1 += hr[j+1] * rest[j+1]
			}
			if j < len(hr) {
				t0 += hr[j] * rest[j]
			}
			acc[r] += x * (hii*x + 2*(t0+t1))
		}
	}
	var tot float64
	for r, a := range acc {
		tot += rowWeight(g.st, r0+r) * a
	}
	return tot
}

// refErr is Σ_r rw_r w_r H w_rᵀ.
func (g *groupSolver) refErr(r0 int) float64 {
	n := g.in
	if g.lite && g.st.Gram != nil {
		return g.rowsForm(r0, g.w[:g.rows*n])
	}
	var tot float64
	for r := range g.rows {
		copy(g.e, g.w[r*n:(r+1)*n])
		tot += rowWeight(g.st, r0+r) * quadForm(g.st, g.e)
	}
	return tot
}

// refit returns the palette minimising the group's error on H for the
// fixed assignment idx (weighted least squares over the k entries, rounded
// to fp16), sorted ascending with idx remapped to match. Entries no weight
// uses keep their value; if the system is singular the palette is
// returned unchanged.
func (g *groupSolver) refit(r0 int, idx []uint8, l []uint16, v []float64) ([]uint16, []float64) {
	k, n := g.k, g.in
	clear(g.m)
	clear(g.rhs)
	st := g.st
	if st.Gram == nil {
		for r := range g.rows {
			rw := rowWeight(st, r0+r)
			for j := range n {
				a := idx[r*n+j]
				c := rw * st.Diag[j]
				g.m[int(a)*k+int(a)] += c
				g.rhs[a] += c * g.w[r*n+j]
			}
		}
	} else {
		if len(g.c) < n*k {
			g.c = make([]float64, n*k)
		}
		c := g.c[:n*k]
		for r := range g.rows {
			rw := rowWeight(st, r0+r)
			if rw == 0 {
				continue
			}
			ri := idx[r*n : (r+1)*n]
			wr := g.w[r*n : (r+1)*n]
			clear(c)
			for i := range n {
				hrow := st.Gram[i*n : (i+1)*n]
				ci := c[i*k : (i+1)*k]
				var hw float64
				for j, h := range hrow {
					ci[ri[j]] += h
					hw += h * wr[j]
				}
				a := int(ri[i])
				g.rhs[a] += rw * hw
				ma := g.m[a*k : (a+1)*k]
				for b, x := range ci {
					ma[b] += rw * x
				}
			}
		}
	}
	sol, ok := solveUsed(g.m, g.rhs, k)
	if !ok {
		return l, v
	}
	type ent struct {
		h   uint16
		old int
	}
	ents := make([]ent, k)
	for a := range k {
		h := l[a]
		if g.m[a*k+a] > 0 {
			h = f2h(sol[a])
		}
		ents[a] = ent{h, a}
	}
	slices.SortStableFunc(ents, func(x, y ent) int {
		a, b := h2f(x.h), h2f(y.h)
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	remap := make([]uint8, k)
	nl := make([]uint16, k)
	for i, e := range ents {
		nl[i] = e.h
		remap[e.old] = uint8(i)
	}
	for i, a := range idx {
		idx[i] = remap[a]
	}
	return nl, halves(nl)
}

// solveUsed solves m·x = rhs (k×k, symmetric positive semi-definite) on
// the entries with a positive diagonal, with a tiny ridge; false if that
// system is not positive definite or the solution is not finite.
func solveUsed(m, rhs []float64, k int) ([]float64, bool) {
	used := make([]int, 0, k)
	var top float64
	for a := range k {
		if d := m[a*k+a]; d > 0 {
			used = append(used, a)
			top = math.Max(top, d)
		}
	}
	u := len(used)
	a := make([]float64, u*u)
	b := make([]float64, u)
	for i, p := range used {
		for j, q := range used {
			a[i*u+j] = m[p*k+q]
		}
		a[i*u+i] += 1e-12 * top
		b[i] = rhs[p]
	}
	if !cholesky(a, u) {
		return nil, false
	}
	// Forward then backward substitution.
	for i := range u {
		s := b[i]
		for j := range i {
			s -= a[i*u+j] * b[j]
		}
		b[i] = s / a[i*u+i]
	}
	for i := u - 1; i >= 0; i-- {
		s := b[i]
		for j := i + 1; j < u; j++ {
			s -= a[j*u+i] * b[j]
		}
		b[i] = s / a[i*u+i]
	}
	out := make([]float64, k)
	for i, p := range used {
		if math.IsNaN(b[i]) || math.IsInf(b[i], 0) {
			return nil, false
		}
		out[p] = b[i]
	}
	return out, true
}

// weightedKMeans returns the ascending fp16 palette of exact 1-D k-means on
// the group's weights, each weighted by its row weight times its input
// channel's diag H (plus a small floor so that no weight is ignored).
func (g *groupSolver) weightedKMeans(r0 int) []uint16 {
	n := g.in
	var mean float64
	for _, d := range g.st.Diag {
		mean += d
	}
	mean /= float64(max(n, 1))
	var rmean float64
	for r := range g.rows {
		rmean += rowWeight(g.st, r0+r)
	}
	rmean /= float64(g.rows)
	floor := 1e-6 * mean * rmean
	if !(floor > 0) {
		floor = 1e-300
	}
	pts := g.binned(floor)
	m := len(pts)
	k := g.k
	out := make([]uint16, k)
	if m <= k {
		for i := range k {
			out[i] = f2h(pts[min(i, m-1)].x)
		}
		return out
	}
	cuts := g.exactCuts(pts, k)
	centroids(g.px, g.pc, cuts, out) // exactCuts left pts split in g.px, g.pc
	return out
}

// binned returns the group's distinct values, ascending, each with its
// summed weight rowWeight·diag H (+ floor): weights are summed per fp16
// value in a table indexed by order key, in element order (so the sums are
// deterministic), and only the distinct keys are sorted, by radix.
func (g *groupSolver) binned(floor float64) []wpoint {
	if g.tab == nil {
		g.tab = make([]float64, 1<<16)
	}
	tab := g.tab
	keys := g.keys[:0]
	n := g.in
	for r := range g.rows {
		rw := rowWeight(g.st, g.r0+r)
		for j, h := range g.bits[r*n : (r+1)*n] {
			k := orderKey(h)
			c := rw*g.st.Diag[j] + floor
			if tab[k] == 0 {
				keys = append(keys, k)
			}
			tab[k] += c
		}
	}
	g.keys = keys
	sorted := radixKeys(keys, &g.tmpk)
	pts := g.pts[:0]
	for _, k := range sorted {
		pts = append(pts, wpoint{halfTable[keyHalf(k)], tab[k]})
		tab[k] = 0
	}
	g.pts = pts
	return pts
}

// radixKeys sorts keys ascending by a two-pass LSD radix sort, using *tmp
// as scratch, and returns the sorted slice (keys' own storage).
func radixKeys(keys []uint16, tmp *[]uint16) []uint16 {
	n := len(keys)
	*tmp = resize(*tmp, n)
	t := (*tmp)[:n]
	var c0, c1 [256]int32
	for _, k := range keys {
		c0[k&0xff]++
		c1[k>>8]++
	}
	var a0, a1 int32
	for i := range 256 {
		a0, c0[i] = a0+c0[i], a0
		a1, c1[i] = a1+c1[i], a1
	}
	for _, k := range keys {
		b := k & 0xff
		t[c0[b]] = k
		c0[b]++
	}
	for _, k := range t {
		b := k >> 8
		keys[c1[b]] = k
		c1[b]++
	}
	return keys
}

// exactCuts returns the k+1 cut positions of the optimal weighted k-means
// of the sorted distinct points (k < len(pts)), found by the uncalibrated
// palettizer's solver (solver.solveCuts, exact for any positive weights) in
// O(n) passes instead of kmeans1D's O(k·n·log n) programme.
func (g *groupSolver) exactCuts(pts []wpoint, k int) []int {
	if g.sol == nil || g.sol.k != k {
		g.sol = newSolver(bitsOf(k))
	}
	s := g.sol
	g.px, g.pc = resize(g.px, len(pts)), resize(g.pc, len(pts))
	for i, p := range pts {
		g.px[i], g.pc[i] = p.x, p.c
	}
	s.loadCentred(g.px, g.pc)
	s.scale = 1
	s.solveCuts()
	return slices.Clone(s.cuts[:k+1])
}

func bitsOf(k int) int {
	b := 0
	for 1<<b < k {
		b++
	}
	return b
}

// kmeans1D returns the k+1 cut positions of the optimal weighted k-means
// of the sorted points (k < len(pts)): a layered dynamic programme, each
// layer by divide and conquer on the monotone optimal cut.
func (g *groupSolver) kmeans1D(pts []wpoint, k int) []int {
	n := len(pts)
	// Centre the values for accurate prefix sums.
	var s0, s1 float64
	for _, p := range pts {
		s0 += p.c
		s1 += p.c * p.x
	}
	mu := s1 / s0
	p0 := make([]float64, n+1)
	p1 := make([]float64, n+1)
	p2 := make([]float64, n+1)
	for i, p := range pts {
		x := p.x - mu
		p0[i+1] = p0[i] + p.c
		p1[i+1] = p1[i] + p.c*x
		p2[i+1] = p2[i] + p.c*x*x
	}
	cost := func(a, b int) float64 {
		w := p0[b] - p0[a]
		s := p1[b] - p1[a]
		return math.Max(p2[b]-p2[a]-s*s/w, 0)
	}
	if len(g.arg) < k*(n+1) {
		g.arg = make([]int32, k*(n+1))
	}
	arg := g.arg[:k*(n+1)]
	g.prev = slices.Grow(g.prev[:0], n+1)[:n+1]
	g.cur = slices.Grow(g.cur[:0], n+1)[:n+1]
	prev, cur := g.prev, g.cur
	for i := 1; i <= n; i++ {
		prev[i] = cost(0, i)
		arg[i] = 0
	}
	var rec func(m, lo, hi, olo, ohi int)
	rec = func(m, lo, hi, olo, ohi int) {
		if lo > hi {
			return
		}
		mid := (lo + hi) / 2
		best, bj := math.Inf(1), olo
		for j := olo; j <= min(ohi, mid-1); j++ {
			if c := prev[j] + cost(j, mid); c < best {
				best, bj = c, j
			}
		}
		cur[mid] = best
		arg[m*(n+1)+mid] = int32(bj)
		rec(m, lo, mid-1, olo, bj)
		rec(m, mid+1, hi, bj, ohi)
	}
	for m := 1; m < k; m++ {
		// m+1 clusters over the first i points, i ∈ [m+1, n]; the last
		// cluster starts at j ∈ [m, i−1].
		rec(m, m+1, n, m, n-1)
		prev, cur = cur, prev
	}
	cuts := make([]int, k+1)
	cuts[k] = n
	i := n
	for m := k - 1; m >= 1; m-- {
		i = int(arg[m*(n+1)+i])
		cuts[m] = i
	}
	return cuts
}
