package reference

import (
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/anemll/anemll/internal/gemm"
)

// kvCache is one layer's keys (after RoPE) and values, one row of
// kvHeads·headDim per position from 0.
type kvCache struct{ keys, values []float32 }

// work holds the per-position scratch rows of the layer routine.
type work struct {
	hn, q, k, v, attn, proj, g, u []float32
	scores                        []float64
	wide                          []float64 // the current linear input, widened
}

func (m *Model) newWork() *work {
	return &work{
		hn: make([]float32, m.hidden), q: make([]float32, m.qDim()), k: make([]float32, m.kvDim()),
		v: make([]float32, m.kvDim()), attn: make([]float32, m.qDim()), proj: make([]float32, m.hidden),
		g: make([]float32, m.inter), u: make([]float32, m.inter),
	}
}

// layer runs decoder layer li (weights L) for the token at position pos,
// updating its residual row x in place. c must hold the layer's keys and
// values of positions 0..pos-1; the position's own are appended.
//
// LLaMA, Mistral, Qwen:  x += o(attn(norm(x)));          x += mlp(norm(x))
// Gemma 3:               x += norm(o(attn(norm(x))));    x += norm(mlp(norm(x)))
func (m *Model) layer(L *layerWeights, li int, c *kvCache, pos int, x []float32, wk *work) {
	if len(c.keys) != pos*m.kvDim() {
		panic("reference: key/value cache out of step with the position")
	}
	rmsNorm(wk.hn, x, L.attnNorm, m.eps)
	wk.wide = widen(wk.wide, wk.hn)
	m.see(&L.q, wk.hn)
	L.q.apply(wk.q, wk.wide)
	m.see(&L.k, wk.hn)
	L.k.apply(wk.k, wk.wide)
	m.see(&L.v, wk.hn)
	L.v.apply(wk.v, wk.wide)
	m.qkNormRope(L, li, pos, wk.q, wk.k)
	c.keys = append(c.keys, wk.k...)
	c.values = append(c.values, wk.v...)
	m.attend(wk.attn, wk.q, c, li, pos, &wk.scores)
	m.see(&L.o, wk.attn)
	wk.wide = widen(wk.wide, wk.attn)
	L.o.apply(wk.proj, wk.wide)
	if L.attnOutNorm != nil {
		rmsNorm(wk.proj, wk.proj, L.attnOutNorm, m.eps)
	}
	addTo(x, wk.proj)
	m.seeResidual(li, x)

	rmsNorm(wk.hn, x, L.mlpNorm, m.eps)
	wk.wide = widen(wk.wide, wk.hn)
	m.see(&L.gate, wk.hn)
	L.gate.apply(wk.g, wk.wide)
	m.see(&L.up, wk.hn)
	L.up.apply(wk.u, wk.wide)
	if m.sp.act == "gelu_pytorch_tanh" {
		geglu(wk.g, wk.u)
	} else {
		swiglu(wk.g, wk.u)
	}
	m.see(&L.down, wk.g)
	wk.wide = widen(wk.wide, wk.g)
	L.down.apply(wk.proj, wk.wide)
	if L.mlpOutNorm != nil {
		rmsNorm(wk.proj, wk.proj, L.mlpOutNorm, m.eps)
	}
	addTo(x, wk.proj)
	m.seeResidual(li, x)
}

// qkNormRope applies the per-head q/k norms (when the family has them)
// and RoPE for position pos to one position's queries q and keys k.
func (m *Model) qkNormRope(L *layerWeights, li, pos int, q, k []float32) {
	hd, inv := m.headDim, m.sp.layers[li].invFreq
	if L.qNorm != nil {
		for h := range m.heads {
			r := q[h*hd : (h+1)*hd]
			rmsNorm(r, r, L.qNorm, m.eps)
		}
		for h := range m.kvHeads {
			r := k[h*hd : (h+1)*hd]
			rmsNorm(r, r, L.kNorm, m.eps)
		}
	}
	rope(q, m.heads, hd, pos, inv)
	rope(k, m.kvHeads, hd, pos, inv)
}

// attend sets out to the attention of position pos's queries q over the
// keys and values of c (positions 0..pos at least; the window's only are
// read), using *scores as scratch.
func (m *Model) attend(out, q []float32, c *kvCache, li, pos int, scores *[]float64) {
	sp := m.sp.layers[li]
	hd, kvd := m.headDim, m.kvDim()
	// Query pos sees keys lo..pos: all earlier ones, or the window.
	lo := 0
	if sp.window > 0 {
		lo = max(0, pos-sp.window+1)
	}
	n := pos + 1 - lo
	if cap(*scores) < n {
		*scores = make([]float64, n, 2*n)
	}
	sc := (*scores)[:n]
	groups := m.heads / m.kvHeads
	for head := range m.heads {
		qo, ko := head*hd, (head/groups)*hd
		qv := q[qo : qo+hd]
		for j := range n {
			r := (lo + j) * kvd
			s := dot(qv, c.keys[r+ko:r+ko+hd]) * m.sp.attnScale
			if cp := m.sp.attnCap; cp != 0 {
				s = math.Tanh(s/cp) * cp
			}
			sc[j] = s
		}
		softmax(sc)
		o := out[qo : qo+hd]
		for ch := range o {
			var acc float64
			for j := range n {
				acc += sc[j] * float64(c.values[(lo+j)*kvd+ko+ch])
			}
			o[ch] = float32(acc)
		}
	}
}

// attendJob is the number of positions one parallel attention job covers.
const attendJob = 16

// attendAll sets b.attn[t] for every position t of the batch (queries
// b.q, keys and values in c), positions spread over the cores in jobs of
// attendJob: each position is computed by one goroutine exactly as
// attend computes it alone, so the numbers do not depend on the split.
func (m *Model) attendAll(b *batch, c *kvCache, li int) {
	if b.fast {
		m.attendFast(b, c, li)
		return
	}
	T := len(b.attn)
	jobs := (T + attendJob - 1) / attendJob
	if len(b.scores) < jobs {
		b.scores = make([][]float64, jobs)
	}
	gemm.ParallelFor(jobs, attendJob*T*m.qDim(), func(j int) {
		for t := j * attendJob; t < min((j+1)*attendJob, T); t++ {
			m.attend(b.attn[t], b.q[t], c, li, t, &b.scores[j])
		}
	})
}

// attendFast is attendAll for the fast mode: per query head, the scores
// of every position against every key are one fp32 product of the packed
// queries and keys, each row is capped, masked to the causal window and
// softmaxed in float64 as attend does, and the outputs are one product of
// the probabilities with the packed values. Heads are spread over the
// cores, each computed by one goroutine, so the numbers do not depend on
// the split.
func (m *Model) attendFast(b *batch, c *kvCache, li int) {
	T, hd, kvd := len(b.attn), m.headDim, m.kvDim()
	sp := m.sp.layers[li]
	groups := m.heads / m.kvHeads
	// Keys per kv head [T, hd], values transposed per kv head [hd, T].
	keys := make([]float32, m.kvHeads*T*hd)
	valsT := make([]float32, m.kvHeads*hd*T)
	for kh := range m.kvHeads {
		for t := range T {
			row := c.keys[t*kvd+kh*hd : t*kvd+(kh+1)*hd]
			copy(keys[(kh*T+t)*hd:], row)
			for ch, v := range c.values[t*kvd+kh*hd : t*kvd+(kh+1)*hd] {
				valsT[(kh*hd+ch)*T+t] = v
			}
		}
	}
	gemm.ParallelFor(m.heads, 2*T*T*hd, func(head int) {
		kh := head / groups
		q := make([]float32, T*hd)
		for t := range T {
			copy(q[t*hd:(t+1)*hd], b.q[t][head*hd:(head+1)*hd])
		}
		sc := make([]float32, T*T)
		gemm.Tile(sc, T, 1, q, keys[kh*T*hd:(kh+1)*T*hd], hd, 0, T, 0, T)
		row := make([]float64, T)
		for t := range T {
			lo := 0
			if sp.window > 0 {
				lo = max(0, t-sp.window+1)
			}
			r := row[:t+1-lo]
			for j := range r {
				v := float64(sc[t*T+lo+j]) * m.sp.attnScale
				if cp := m.sp.attnCap; cp != 0 {
					v = math.Tanh(v/cp) * cp
				}
				r[j] = v
			}
			softmax(r)
			p := sc[t*T : (t+1)*T]
			clear(p)
			for j, v := range r {
				p[lo+j] = float32(v)
			}
		}
		out := make([]float32, T*hd)
		gemm.Tile(out, hd, 1, sc, valsT[kh*hd*T:(kh+1)*hd*T], T, 0, T, 0, hd)
		for t := range T {
			copy(b.attn[t][head*hd:(head+1)*hd], out[t*hd:(t+1)*hd])
		}
	})
}

// batch holds the scratch rows of layerBatch, one per position.
type batch struct {
	hn, q, k, v, attn, proj, g, u [][]float32
	scores                        [][]float64 // per attention job
	wide                          [][]float64 // the current linear input rows, widened
	flat, out                     []float32   // Fast: the input rows packed, one product
	fast                          bool
}

// input makes x the input rows of the linear layers applied next (widened,
// or packed for the fp32 kernels in Fast mode).
func (b *batch) input(x [][]float32) {
	if !b.fast {
		b.wide = widenRows(b.wide, x)
		return
	}
	if len(x) == 0 {
		b.flat = b.flat[:0]
		return
	}
	w := len(x[0])
	b.flat = slices.Grow(b.flat[:0], len(x)*w)[:len(x)*w]
	for t, row := range x {
		copy(b.flat[t*w:(t+1)*w], row)
	}
}

// apply sets dst[t] to l applied to input row t.
func (b *batch) apply(l *linear, dst [][]float32) {
	if !b.fast {
		l.applyRows(dst, b.wide)
		return
	}
	T := len(dst)
	b.out = slices.Grow(b.out[:0], T*l.out)[:T*l.out]
	gemm.NT(b.out, b.flat, l.w, T, l.out, l.in)
	for t, row := range dst {
		copy(row, b.out[t*l.out:(t+1)*l.out])
		if l.b != nil {
			for o, v := range l.b {
				row[o] += v
			}
		}
	}
}

func (m *Model) newBatch(T int) *batch {
	return &batch{
		hn: newRows(T, m.hidden), q: newRows(T, m.qDim()), k: newRows(T, m.kvDim()), v: newRows(T, m.kvDim()),
		attn: newRows(T, m.qDim()), proj: newRows(T, m.hidden), g: newRows(T, m.inter), u: newRows(T, m.inter),
		fast: m.opt.Fast,
	}
}

// layerBatch is layer for positions 0..len(x)-1 at once (the cache c
// empty): the same operations on the same values, so the same numbers bit
// for bit, but each linear layer's weights are read once for all
// positions instead of once per position. Observers see each weight's
// input rows position by position just before the weight is applied (q, k
// and v of one position together, as gate and up), and the residual rows
// after each add.
func (m *Model) layerBatch(L *layerWeights, li int, c *kvCache, x [][]float32, b *batch) {
	T := len(x)
	for t := range T {
		rmsNorm(b.hn[t], x[t], L.attnNorm, m.eps)
		m.see(&L.q, b.hn[t])
		m.see(&L.k, b.hn[t])
		m.see(&L.v, b.hn[t])
	}
	b.input(b.hn)
	b.apply(&L.q, b.q)
	b.apply(&L.k, b.k)
	b.apply(&L.v, b.v)
	for t := range T {
		m.qkNormRope(L, li, t, b.q[t], b.k[t])
		c.keys = append(c.keys, b.k[t]...)
		c.values = append(c.values, b.v[t]...)
	}
	m.attendAll(b, c, li)
	for t := range T {
		m.see(&L.o, b.attn[t])
	}
	b.input(b.attn)
	b.apply(&L.o, b.proj)
	for t := range T {
		if L.attnOutNorm != nil {
			rmsNorm(b.proj[t], b.proj[t], L.attnOutNorm, m.eps)
		}
		addTo(x[t], b.proj[t])
		m.seeResidual(li, x[t])
		rmsNorm(b.hn[t], x[t], L.mlpNorm, m.eps)
		m.see(&L.gate, b.hn[t])
		m.see(&L.up, b.hn[t])
	}
	b.input(b.hn)
	b.apply(&L.gate, b.g)
	b.apply(&L.up, b.u)
	for t := range T {
		if m.sp.act == "gelu_pytorch_tanh" {
			geglu(b.g[t], b.u[t])
		} else {
			swiglu(b.g[t], b.u[t])
		}
		m.see(&L.down, b.g[t])
	}
	b.input(b.g)
	b.apply(&L.down, b.proj)
	for t := range T {
		if L.mlpOutNorm != nil {
			rmsNorm(b.proj[t], b.proj[t], L.mlpOutNorm, m.eps)
		}
		addTo(x[t], b.proj[t])
		m.seeResidual(li, x[t])
	}
}

// rope rotates each of the heads of x (heads × hd) in place for position
// pos, the rotate_half way: pairs are (i, i+hd/2), angle pos·inv[i].
func rope(x []float32, heads, hd, pos int, inv []float64) {
	half := hd / 2
	for i, f := range inv {
		sin, cos := math.Sincos(float64(pos) * f)
		for hh := range heads {
			a := x[hh*hd+i : hh*hd+i+half+1]
			x0, x1 := float64(a[0]), float64(a[half])
			a[0] = float32(x0*cos - x1*sin)
			a[half] = float32(x1*cos + x0*sin)
		}
	}
}

// rmsNorm sets dst = x / sqrt(mean(x²) + eps) * g (dst may be x).
func rmsNorm(dst, x, g []float32, eps float64) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	for i, v := range x {
		dst[i] = g[i] * float32(float64(v)*r)
	}
}

// dot returns Σ a[i]·b[i] accumulated in float64 (four partial sums).
func dot(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i]) * float64(b[i])
		s1 += float64(a[i+1]) * float64(b[i+1])
		s2 += float64(a[i+2]) * float64(b[i+2])
		s3 += float64(a[i+3]) * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i]) * float64(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// widen returns x as float64 (exactly), in dst's storage when it fits.
func widen(dst []float64, x []float32) []float64 {
	if cap(dst) < len(x) {
		dst = make([]float64, len(x))
	}
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = float64(v)
	}
	return dst
}

// widenRows widens each row of x (see widen), reusing dst's rows.
func widenRows(dst [][]float64, x [][]float32) [][]float64 {
	for len(dst) < len(x) {
		dst = append(dst, nil)
	}
	dst = dst[:len(x)]
	for t := range x {
		dst[t] = widen(dst[t], x[t])
	}
	return dst
}

// dotWide is dot with a already widened to float64: the same products
// (a float32 product is exact in float64) summed in the same order, so the
// same result, with one conversion per term instead of two.
func dotWide(a []float64, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * float64(b[i])
		s1 += a[i+1] * float64(b[i+1])
		s2 += a[i+2] * float64(b[i+2])
		s3 += a[i+3] * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += a[i] * float64(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// dotWide2 returns dotWide(a0, b) and dotWide(a1, b) computed together,
// each b value converted once for both.
func dotWide2(a0, a1 []float64, b []float32) (float64, float64) {
	b = b[:len(a0)]
	a1 = a1[:len(a0)]
	var s0, s1, s2, s3, t0, t1, t2, t3 float64
	i := 0
	for ; i+4 <= len(a0); i += 4 {
		w0, w1, w2, w3 := float64(b[i]), float64(b[i+1]), float64(b[i+2]), float64(b[i+3])
		s0 += a0[i] * w0
		s1 += a0[i+1] * w1
		s2 += a0[i+2] * w2
		s3 += a0[i+3] * w3
		t0 += a1[i] * w0
		t1 += a1[i+1] * w1
		t2 += a1[i+2] * w2
		t3 += a1[i+3] * w3
	}
	for ; i < len(a0); i++ {
		s0 += a0[i] * float64(b[i])
		t0 += a1[i] * float64(b[i])
	}
	return (s0 + s1) + (s2 + s3), (t0 + t1) + (t2 + t3)
}

// softmax replaces s by exp(s - max) / sum.
func softmax(s []float64) {
	mx := math.Inf(-1)
	for _, v := range s {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range s {
		s[i] = math.Exp(v - mx)
		sum += s[i]
	}
	for i := range s {
		s[i] /= sum
	}
}

// softcap sets x = tanh(x/c)·c.
func softcap(x []float32, c float64) {
	for i, v := range x {
		x[i] = float32(math.Tanh(float64(v)/c) * c)
	}
}

// swiglu sets g = silu(g) * u.
func swiglu(g, u []float32) {
	u = u[:len(g)]
	for i, v := range g {
		x := float64(v)
		g[i] = float32(x / (1 + math.Exp(-x)) * float64(u[i]))
	}
}

// geglu sets g = gelu_tanh(g) * u, with PyTorch's tanh approximation
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
func geglu(g, u []float32) {
	u = u[:len(g)]
	k := math.Sqrt(2 / math.Pi)
	for i, v := range g {
		x := float64(v)
		gl := 0.5 * x * (1 + math.Tanh(k*(x+0.044715*x*x*x)))
		g[i] = float32(float64(float32(gl)) * float64(u[i]))
	}
}

func addTo(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}

// parallelMin is the weight count below which a matrix-vector product stays
// on one goroutine.
const parallelMin = 1 << 17

// apply sets dst = W·x + b for the input x widened to float64 (see
// widen), splitting output rows over cores for big W (each row is computed
// by one goroutine, so the result does not depend on the number of cores).
func (l *linear) apply(dst []float32, xw []float64) {
	rows := func(lo, hi int) {
		for o := lo; o < hi; o++ {
			s := dotWide(xw, l.w[o*l.in:(o+1)*l.in])
			if l.b != nil {
				s += float64(l.b[o])
			}
			dst[o] = float32(s)
		}
	}
	l.split(rows)
}

// split runs rows over [0, l.out), in one piece for a small W or on one
// core, else in one contiguous block of rows per core.
func (l *linear) split(rows func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers == 1 || l.out*l.in < parallelMin {
		rows(0, l.out)
		return
	}
	var wg sync.WaitGroup
	step := (l.out + workers - 1) / workers
	for lo := 0; lo < l.out; lo += step {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			rows(lo, hi)
		}(lo, min(lo+step, l.out))
	}
	wg.Wait()
}

// applyRows sets dst[t] = W·x[t] + b for every position t (x widened, see
// widenRows), each output row's weights read once for all positions (the
// same dot products as apply, so the same numbers), rows split over cores
// as apply splits them.
func (l *linear) applyRows(dst [][]float32, xw [][]float64) {
	put := func(t, o int, s float64) {
		if l.b != nil {
			s += float64(l.b[o])
		}
		dst[t][o] = float32(s)
	}
	rows := func(lo, hi int) {
		for o := lo; o < hi; o++ {
			w := l.w[o*l.in : (o+1)*l.in]
			t := 0
			for ; t+2 <= len(xw); t += 2 {
				s0, s1 := dotWide2(xw[t], xw[t+1], w)
				put(t, o, s0)
				put(t+1, o, s1)
			}
			if t < len(xw) {
				put(t, o, dotWide(xw[t], w))
			}
		}
	}
	l.split(rows)
}
