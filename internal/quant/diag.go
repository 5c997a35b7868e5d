package quant

import (
	"math"
	"slices"
	"sync"
)

// This file holds calibrated palettization with diagonal statistics (no
// Gram matrix), the path every weight of a large model takes. The error of
// a group is then Σ_r rw_r Σ_j diag_j·e_rj², which weighted 1-D k-means
// minimises exactly (before fp16 rounding) and nearest entries assign
// optimally; one least-squares refit absorbs the rounding of the centroids,
// and the uncalibrated palette stays a candidate, so no group gets worse.
//
// It computes what groupSolver.solve computes for such statistics, with
// the same floating-point operations in the same order for everything that
// decides the result and for the errors on H it reports, so the same bytes
// (TestDiagMatchesGroupSolver checks that), but faster: it runs inside
// Palettize's group loop right after each group's uncalibrated solve
// (groupHook), reusing that solve's sorted distinct values instead of
// sorting them again; it reads the fp16 weights directly through halfTable
// instead of widening the group; each pass over the group's weights does
// several things at once (the uncalibrated error and the binning in one;
// an assignment, its error and the refit's normal equations in another);
// rows of weight 1 or 0 skip the multiplications by it; the refit's normal
// matrix, being diagonal, is solved entry by entry; and it allocates
// nothing per group. Like Palettize, it aims the weighted cuts' λ search
// of a tensor's groups with group 0's λ (not at 8 bits); the solve is exact
// whatever λ it starts from, so that changes the cuts only where two
// clusterings tie. The report's output energy and weight-space errors,
// which decide nothing, come from the distinct values and their counts
// (the same sums in another order, so their last bits differ).

// diagSolver is one goroutine's scratch space for diagonal-statistics
// groups. Its results do not depend on what it solved before.
type diagSolver struct {
	k int

	st          *Stats
	rows, in    int
	diagMean    float64 // mean of st.Diag, as weightedKMeans computes it
	haveWeights bool    // st.RowWeight != nil

	tab  []float64 // per order key: summed weight, zero between groups
	near []uint8   // per half bit pattern: nearest palette entry
	cw   []float64 // per distinct value: its summed weight
	sol  *solver   // the exact solver, for the weighted cuts

	// scale is the exact solver's λ scale for the weighted cuts; when
	// probe is set, kmeans leaves in ratio the scale the tensor's other
	// groups should use (as Palettize calibrates on group 0: the λ that
	// hit, or with centre the middle of the λ range), 0 if none.
	scale, ratio  float64
	probe, centre bool

	// Palette values (uncalibrated, k-means, refit) and the refit's
	// normal equations (diagonal), indexed by a palette index (a byte, so
	// without bounds checks; entries from k on are unused).
	v0, v1, v2, mdiag, rhs [256]float64

	l1, l2   []uint16 // palettes: k-means, refit
	ents     []refitEntry
	id1, id2 []uint8 // indices of the k-means and refit palettes
}

type refitEntry struct {
	h   uint16
	old int
}

// diagResult is one group's result: the errors of groupResult and the
// weight-space squared errors of the uncalibrated and the chosen palette.
type diagResult struct {
	groupResult
	wse0, wse float64
}

var diagSolvers [9]sync.Pool

// getDiagSolver returns a solver for bits-bit palettes of groups of rows
// rows of st's width.
func getDiagSolver(bits int, st *Stats, rows int) *diagSolver {
	d, ok := diagSolvers[bits].Get().(*diagSolver)
	if !ok {
		k := 1 << bits
		d = &diagSolver{
			k:   k,
			tab: make([]float64, 1<<16), near: make([]uint8, 1<<16),
			sol: newSolver(bits),
			l1:  make([]uint16, k), l2: make([]uint16, k),
			ents: make([]refitEntry, k),
		}
	}
	n := st.In()
	d.st, d.rows, d.in = st, rows, n
	d.haveWeights = st.RowWeight != nil
	var mean float64
	for _, x := range st.Diag {
		mean += x
	}
	d.diagMean = mean / float64(max(n, 1))
	d.id1 = resize(d.id1, rows*n)
	d.id2 = resize(d.id2, rows*n)
	return d
}

func putDiagSolver(bits int, d *diagSolver) {
	d.st = nil
	diagSolvers[bits].Put(d)
}

// rowWeight is the weight of row r of the tensor.
func (d *diagSolver) rowWeight(r int) float64 {
	if !d.haveWeights {
		return 1
	}
	return d.st.RowWeight[r]
}

// solve palettizes one group: w its fp16 weights (rows×in), r0 its first
// row, s the solver that has just solved it uncalibrated (its distinct
// values), lut0/idx0 that solution, lut/idx the output.
func (d *diagSolver) solve(s *solver, w []uint16, r0 int, lut0 []uint16, idx0 []uint8, lut []uint16, idx []uint8) diagResult {
	k, n := d.k, d.in
	diag := d.st.Diag[:n]
	for i, h := range lut0 {
		d.v0[i] = halfTable[h]
	}
	var rmean float64
	for r := range d.rows {
		rmean += d.rowWeight(r0 + r)
	}
	rmean /= float64(d.rows)
	floor := 1e-6 * d.diagMean * rmean
	if !(floor > 0) {
		floor = 1e-300
	}

	// Pass 1: the uncalibrated palette's error on H and the k-means
	// weight of each distinct value.
	var res diagResult
	for r := range d.rows {
		res.err0 += d.pass1(w[r*n:(r+1)*n], idx0[r*n:(r+1)*n], diag, d.rowWeight(r0+r), floor)
	}
	// The output energy and the weight-space error from the distinct
	// values (report figures, not decisions).
	m := len(s.dkey)
	d.cw = resize(d.cw, m)
	cw := d.cw[:m]
	tab := (*[1 << 16]float64)(d.tab)
	for i, key := range s.dkey {
		c := tab[key]
		cw[i] = c
		tab[key] = 0
		x, cnt := s.val[i], s.cnt[i]
		e := x - d.v0[s.index[i]]
		res.ref += (c - cnt*floor) * x * x
		res.wse0 += cnt * e * e
	}

	// Candidate 1: weighted k-means, nearest entries.
	l1, v1 := d.l1[:k], &d.v1
	d.kmeans(s.val[:m], cw, l1)
	for i, h := range l1 {
		v1[i] = halfTable[h]
	}
	wse1 := d.setNear(s, v1[:k])
	// Pass 2: its indices, its error, and the refit's normal equations.
	clear(d.mdiag[:k])
	clear(d.rhs[:k])
	var e1 float64
	for r := range d.rows {
		e1 += d.pass2(w[r*n:(r+1)*n], d.id1[r*n:(r+1)*n], diag, d.rowWeight(r0+r))
	}

	best, pick := res.err0, 0
	if e1 < best {
		best, pick = e1, 1
	}
	// Candidate 2: the refit of candidate 1, nearest entries (the same as
	// candidate 1 if the refit changes no entry).
	l2, v2 := d.l2[:k], &d.v2
	var wse2 float64
	if d.refit(l1, l2) && !slices.Equal(l1, l2) {
		for i, h := range l2 {
			v2[i] = halfTable[h]
		}
		wse2 = d.setNear(s, v2[:k])
		var e2 float64
		for r := range d.rows {
			e2 += d.pass3(w[r*n:(r+1)*n], d.id2[r*n:(r+1)*n], diag, d.rowWeight(r0+r))
		}
		if e2 < best {
			best, pick = e2, 2
		}
	}
	res.err = best
	switch pick {
	case 0:
		copy(lut, lut0)
		copy(idx, idx0)
		res.wse = res.wse0
	case 1:
		copy(lut, l1)
		copy(idx, d.id1)
		res.wse = wse1
	case 2:
		copy(lut, l2)
		copy(idx, d.id2)
		res.wse = wse2
	}
	return res
}

// The passes over one row: its weights row, their indices ri, diag H dg
// and the row's weight rw. Each returns rw times the row's error on H,
// Σ_j dg_j·e_j² summed in order (as groupSolver's groupErr and quadForm
// do); a weight of 1 or 0 takes a loop without the multiplications, which
// changes no bit (1·x = x, and a zero weight adds zeros).

// pass1 returns the row's error with the uncalibrated indices ri (into
// d.v0) and adds rw·dg_j + floor to each weight's k-means bin.
func (d *diagSolver) pass1(row []uint16, ri []uint8, dg []float64, rw, floor float64) float64 {
	tab := (*[1 << 16]float64)(d.tab)
	v0 := &d.v0
	ri, dg = ri[:len(row)], dg[:len(row)]
	var se float64
	switch rw {
	case 1:
		for j, h := range row {
			dj := dg[j]
			e := halfTable[h] - v0[ri[j]]
			se += dj * e * e
			tab[orderKey(h)] += dj + floor
		}
		return se
	case 0:
		for _, h := range row {
			tab[orderKey(h)] += floor
		}
		return 0
	}
	for j, h := range row {
		dj := dg[j]
		e := halfTable[h] - v0[ri[j]]
		se += dj * e * e
		tab[orderKey(h)] += rw*dj + floor
	}
	return rw * se
}

// pass2 writes the row's indices into d.v1 (by d.near) to ri, returns its
// error, and adds each weight's rw·dg_j and rw·dg_j·x to the refit's
// normal equations.
func (d *diagSolver) pass2(row []uint16, ri []uint8, dg []float64, rw float64) float64 {
	near := (*[1 << 16]uint8)(d.near)
	v1, mdiag, rhs := &d.v1, &d.mdiag, &d.rhs
	ri, dg = ri[:len(row)], dg[:len(row)]
	var se float64
	switch rw {
	case 1:
		for j, h := range row {
			a := near[h]
			ri[j] = a
			x := halfTable[h]
			dj := dg[j]
			e := x - v1[a]
			se += dj * e * e
			mdiag[a] += dj
			rhs[a] += dj * x
		}
		return se
	case 0:
		for j, h := range row {
			ri[j] = near[h]
		}
		return 0
	}
	for j, h := range row {
		a := near[h]
		ri[j] = a
		x := halfTable[h]
		dj := dg[j]
		e := x - v1[a]
		se += dj * e * e
		c := rw * dj
		mdiag[a] += c
		rhs[a] += c * x
	}
	return rw * se
}

// pass3 writes the row's indices into d.v2 (by d.near) to ri and returns
// its error.
func (d *diagSolver) pass3(row []uint16, ri []uint8, dg []float64, rw float64) float64 {
	near := (*[1 << 16]uint8)(d.near)
	v2 := &d.v2
	ri, dg = ri[:len(row)], dg[:len(row)]
	var se float64
	if rw == 0 {
		for j, h := range row {
			ri[j] = near[h]
		}
		return 0
	}
	for j, h := range row {
		a := near[h]
		ri[j] = a
		e := halfTable[h] - v2[a]
		se += dg[j] * e * e
	}
	if rw == 1 {
		return se
	}
	return rw * se
}

// setNear fills d.near for the ascending palette v: for each distinct value
// of s (ascending) the entry nearest() picks, found by a merge walk. It
// returns the weight-space squared error of those entries.
func (d *diagSolver) setNear(s *solver, v []float64) float64 {
	near := (*[1 << 16]uint8)(d.near)
	last := len(v) - 1
	lo := 0
	var sse float64
	for i, key := range s.dkey {
		x := s.val[i]
		// lo: the first entry ≥ x, or the last entry (as nearest's
		// bisection finds it); x ascends, so lo only moves up.
		for lo < last && v[lo] < x {
			lo++
		}
		q := lo
		if lo > 0 && x-v[lo-1] <= v[lo]-x {
			q = lo - 1
		}
		near[keyHalf(key)] = uint8(q)
		e := x - v[q]
		sse += s.cnt[i] * e * e
	}
	near[0x8000] = near[0] // −0 takes +0's entry (stale only if neither occurs)
	return sse
}

// kmeans writes to out the ascending fp16 palette of exact weighted 1-D
// k-means on the distinct values val (ascending) with weights cw.
func (d *diagSolver) kmeans(val, cw []float64, out []uint16) {
	m, k := len(val), d.k
	if m <= k {
		for i := range k {
			out[i] = f2h(val[min(i, m-1)])
		}
		return
	}
	s := d.sol
	s.loadCentred(val, cw)
	s.scale, s.hitRatio = d.scale, 0
	s.solveCuts()
	if d.probe {
		d.ratio = s.hitRatio
		if d.centre {
			s.cutSSE = s.sse()
			if r, ok := s.windowCentre(); ok {
				d.ratio = r
			}
		}
	}
	centroids(val, cw, s.cuts[:k+1], out)
}

// refit writes to l2 the palette minimising the group's error for the
// assignment in d.mdiag/d.rhs (each used entry's weighted mean, with
// solveUsed's ridge and arithmetic, rounded to fp16; unused entries keep
// their l1 value), ascending; false (l2 untouched) if a solution is not
// finite.
func (d *diagSolver) refit(l1, l2 []uint16) bool {
	k := d.k
	mdiag, rhs := d.mdiag[:k], d.rhs[:k]
	var top float64
	for _, x := range mdiag {
		if x > 0 {
			top = math.Max(top, x)
		}
	}
	ents := d.ents[:k]
	for a := range k {
		h := l1[a]
		if x := mdiag[a]; x > 0 {
			// solveUsed's Cholesky factor of a diagonal matrix is the
			// square root of each entry, and its forward and backward
			// substitutions each divide by it.
			sq := math.Sqrt(x + 1e-12*top)
			sol := rhs[a] / sq / sq
			if math.IsNaN(sol) || math.IsInf(sol, 0) {
				return false
			}
			h = f2h(sol)
		}
		ents[a] = refitEntry{h, a}
	}
	slices.SortStableFunc(ents, func(x, y refitEntry) int {
		a, b := halfTable[x.h], halfTable[y.h]
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	for i, e := range ents {
		l2[i] = e.h
	}
	return true
}
