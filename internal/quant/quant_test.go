package quant

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/fp16"
)

func half(f float64) uint16 { return uint16(fp16.FromFloat32(float32(f))) }

// randWeights returns n fp16 weights: N(0, scale²) rounded to half.
func randWeights(rng *rand.Rand, n int, scale float64) []uint16 {
	w := make([]uint16, n)
	for i := range w {
		w[i] = half(rng.NormFloat64() * scale)
	}
	return w
}

// checkPalette verifies the structural contract of a palette for weights w:
// sizes, ascending LUTs, indices in range, Dense = LUT[index], and that every
// weight uses its nearest LUT entry with ties to the lowest index.
func checkPalette(t *testing.T, w []uint16, p *Palette) {
	t.Helper()
	k := 1 << p.Bits
	groups := p.Groups()
	if len(p.LUT) != groups*k || len(p.Indices) != len(w) {
		t.Fatalf("sizes: LUT %d (want %d), indices %d (want %d)", len(p.LUT), groups*k, len(p.Indices), len(w))
	}
	per := len(w) / groups
	dense := p.Dense()
	for g := 0; g < groups; g++ {
		lut := p.LUT[g*k : (g+1)*k]
		for j := 1; j < k; j++ {
			if halfTable[lut[j]] < halfTable[lut[j-1]] {
				t.Fatalf("group %d LUT not ascending: %v", g, lut)
			}
		}
		for i := g * per; i < (g+1)*per; i++ {
			x := int(p.Indices[i])
			if x >= k {
				t.Fatalf("index %d = %d ≥ %d", i, x, k)
			}
			if dense[i] != lut[x] {
				t.Fatalf("Dense[%d] = %#x, want %#x", i, dense[i], lut[x])
			}
			v := halfTable[w[i]]
			d := math.Abs(v - halfTable[lut[x]])
			for j := 0; j < k; j++ {
				dj := math.Abs(v - halfTable[lut[j]])
				if dj < d || (dj == d && j < x) {
					t.Fatalf("weight %d (%g) uses entry %d (%g), entry %d (%g) is nearer or ties lower",
						i, v, x, halfTable[lut[x]], j, halfTable[lut[j]])
				}
			}
		}
	}
}

func TestLUTShape(t *testing.T) {
	tests := []struct {
		name  string
		shape []int64
		bits  int
		group int
		want  []int64
	}{
		{"conv 4-bit", []int64{64, 32, 1, 1}, 4, 8, []int64{8, 1, 1, 1, 16, 1}},
		{"conv 6-bit", []int64{128, 16, 1, 1}, 6, 8, []int64{16, 1, 1, 1, 64, 1}},
		{"linear 4-bit", []int64{48, 40}, 4, 8, []int64{6, 1, 16, 1}},
		{"embedding 2-bit group 16", []int64{64, 24}, 2, 16, []int64{4, 1, 4, 1}},
		{"linear 8-bit group 4", []int64{8, 300}, 8, 4, []int64{2, 1, 256, 1}},
		{"rank 1", []int64{16}, 1, 8, []int64{2, 2, 1}},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 1
			for _, d := range tc.shape {
				n *= int(d)
			}
			w := randWeights(rng, n, 0.05)
			p, err := Palettize(w, tc.shape, Options{Bits: tc.bits, GroupSize: tc.group})
			if err != nil {
				t.Fatal(err)
			}
			if got := p.LUTShape(); !slices.Equal(got, tc.want) {
				t.Errorf("LUTShape = %v, want %v", got, tc.want)
			}
			if !slices.Equal(p.Shape, tc.shape) {
				t.Errorf("Shape = %v", p.Shape)
			}
			checkPalette(t, w, p)
		})
	}
}

// TestPalettizeMatrix runs every bit width with several group sizes and
// shapes (groups from a few to 72,000 weights) and checks the contract plus an error
// bound: the MSE must not exceed that of uniform quantisation on the group
// range, a loose ceiling any sane clustering meets.
func TestPalettizeMatrix(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	shapes := [][]int64{{16, 24, 1, 1}, {32, 50}, {24, 3000}}
	for _, bits := range []int{1, 2, 3, 4, 6, 8} {
		for _, group := range []int{1, 4, 8} {
			for _, shape := range shapes {
				name := fmt.Sprintf("bits=%d/group=%d/%v", bits, group, shape)
				t.Run(name, func(t *testing.T) {
					n := 1
					for _, d := range shape {
						n *= int(d)
					}
					w := randWeights(rng, n, 1)
					p, err := Palettize(w, shape, Options{Bits: bits, GroupSize: group, Workers: 2})
					if err != nil {
						t.Fatal(err)
					}
					checkPalette(t, w, p)
					mse, _ := Error(w, p)
					// Uniform k-level quantiser over [min, max] of the whole tensor.
					lo, hi := math.Inf(1), math.Inf(-1)
					for _, h := range w {
						lo, hi = math.Min(lo, halfTable[h]), math.Max(hi, halfTable[h])
					}
					step := (hi - lo) / float64(int(1)<<bits)
					if bound := step * step / 4; mse > bound {
						t.Errorf("MSE %g above uniform-quantiser bound %g", mse, bound)
					}
				})
			}
		}
	}
}

// TestExactFewDistinct: a group with at most 2^bits distinct values is
// reproduced exactly, including at 8 bits with 256 distinct values.
func TestExactFewDistinct(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, bits := range []int{1, 2, 3, 4, 6, 8} {
		k := 1 << bits
		for _, rowLen := range []int{100, 4096} { // small and large groups
			t.Run(fmt.Sprintf("bits=%d/len=%d", bits, rowLen*8), func(t *testing.T) {
				// Two groups, each with exactly k (then k/2+1) distinct values.
				var w []uint16
				for g, nd := range []int{k, k/2 + 1} {
					vals := make([]uint16, nd)
					for j := range vals {
						vals[j] = half(float64(j-nd/2) * 0.125 * float64(g+1))
					}
					for i := 0; i < 8*rowLen; i++ {
						w = append(w, vals[i%nd])
					}
					rng.Shuffle(8*rowLen, func(a, b int) {
						off := g * 8 * rowLen
						w[off+a], w[off+b] = w[off+b], w[off+a]
					})
				}
				p, err := Palettize(w, []int64{16, int64(rowLen)}, Options{Bits: bits})
				if err != nil {
					t.Fatal(err)
				}
				if d := p.Dense(); !slices.Equal(d, w) {
					t.Fatal("dense differs from exact input")
				}
				mse, _ := Error(w, p)
				if mse != 0 {
					t.Fatalf("MSE %g, want 0", mse)
				}
				checkPalette(t, w, p)
			})
		}
	}
}

// TestNegativeZero: −0 is stored as +0 (same value, zero error).
func TestNegativeZero(t *testing.T) {
	w := []uint16{0x8000, 0, 0x3c00, 0xbc00, 0x8000, 0x3800, 0, 0x4000}
	p, err := Palettize(w, []int64{8, 1}, Options{Bits: 2})
	if err != nil {
		t.Fatal(err)
	}
	mse, _ := Error(w, p)
	// 5 distinct values {-1, 0, 0.5, 1, 2} into 4: best merges 0.5 and 1.
	if got, wantMSE := mse, 2*0.0625/8; math.Abs(got-wantMSE) > 1e-12 {
		t.Errorf("MSE %g, want %g (LUT %#x)", got, wantMSE, p.LUT)
	}
	if p.Indices[0] != p.Indices[1] {
		t.Errorf("−0 and +0 got different indices %d, %d", p.Indices[0], p.Indices[1])
	}
}

// TestDeterministic: byte-identical results for 1, 2 and 7 workers and
// across runs, on both solver paths.
func TestDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	w := randWeights(rng, 32*2048, 1)
	for _, tc := range []struct {
		shape []int64
		bits  int
	}{{[]int64{32, 2048}, 6}, {[]int64{128, 512}, 4}, {[]int64{256, 256}, 3}, {[]int64{512, 128}, 4}, {[]int64{16, 4096}, 8}, {[]int64{8, 8192}, 4}} {
		var ref *Palette
		for _, workers := range []int{1, 2, 7, 2} {
			p, err := Palettize(w, tc.shape, Options{Bits: tc.bits, Workers: workers})
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = p
				continue
			}
			if !slices.Equal(p.LUT, ref.LUT) || !bytes.Equal(p.Indices, ref.Indices) {
				t.Fatalf("%v bits %d: workers %d differ from workers 1", tc.shape, tc.bits, workers)
			}
		}
	}
}

// TestDistinctPaths: the count-table-plus-radix-sort distinct pass finds the
// same distinct keys and counts as sorting every key, on a group with −0,
// +0 and the largest half.
func TestDistinctPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	w := randWeights(rng, 20000, 0.3)
	w[5], w[6], w[7] = 0x8000, 0, 0x7bff
	a, b := newSolver(4), newSolver(4)
	a.distinct(w)
	// Force the sort path on the same data.
	b.keys = b.keys[:0]
	for _, x := range w {
		b.keys = append(b.keys, orderKey(x))
	}
	slices.Sort(b.keys)
	var keys []uint16
	var cnt []float64
	for i, k := range b.keys {
		if i > 0 && k == b.keys[i-1] {
			cnt[len(cnt)-1]++
			continue
		}
		keys = append(keys, k)
		cnt = append(cnt, 1)
	}
	if !slices.Equal(a.dkey, keys) || !slices.Equal(a.cnt, cnt) {
		t.Fatal("distinct differs from sorted keys")
	}
	for i := 1; i < len(a.val); i++ {
		if !(a.val[i] > a.val[i-1]) {
			t.Fatalf("values not strictly ascending at %d: %g, %g", i, a.val[i-1], a.val[i])
		}
	}
	if a.p0[len(a.val)] != float64(len(w)) {
		t.Fatalf("count %g, want %d", a.p0[len(a.val)], len(w))
	}
}

// bruteDP is the O(k·n²) textbook dynamic programme over distinct values.
func bruteDP(s *solver, k int) float64 {
	n := len(s.val)
	prev := make([]float64, n+1)
	for i := range prev {
		prev[i] = s.cost(0, i)
	}
	for m := 1; m < k; m++ {
		cur := make([]float64, n+1)
		for x := 0; x <= n; x++ {
			best := math.Inf(1)
			for y := 0; y <= x; y++ {
				best = math.Min(best, prev[y]+s.cost(y, x))
			}
			cur[x] = best
		}
		prev = cur
	}
	return prev[n]
}

// TestExactDP: on groups small enough for the exact programme the
// solver's clustering (before fp16 rounding) is optimal, matching the
// textbook dynamic programme.
func TestExactDP(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for trial := 0; trial < 12; trial++ {
		bits := []int{1, 2, 3, 4}[trial%4]
		n := 60 + rng.IntN(200)
		var w []uint16
		switch trial % 3 {
		case 0:
			w = randWeights(rng, n, 1)
		case 1: // heavy tails
			for range n {
				w = append(w, half(rng.NormFloat64()/(0.2+rng.Float64())))
			}
		case 2: // clumps
			for range n {
				w = append(w, half(float64(rng.IntN(7))+0.01*rng.NormFloat64()))
			}
		}
		s := newSolver(bits)
		s.distinct(w)
		if len(s.val) <= s.k {
			continue
		}
		s.solveCuts()
		got, want := s.sse(), bruteDP(s, s.k)
		if math.Abs(got-want) > 1e-9*math.Max(1, want) {
			t.Errorf("trial %d bits %d n %d: SSE %.12g, optimum %.12g", trial, bits, len(s.val), got, want)
		}
	}
}

// TestLargeGroupNearOptimal: on Gaussian groups with more distinct values
// than the baseline solved exactly, the solver finds the optimum (computed
// by the exact programme over all cut positions) to rounding.
func TestLargeGroupNearOptimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, bits := range []int{2, 4, 6} {
		w := randWeights(rng, 16384, 1)
		s := newSolver(bits)
		s.distinct(w)
		if oldExactDistinct(s.k, len(s.val)) {
			t.Fatalf("only %d distinct values; test needs a group the old solver did not solve exactly", len(s.val))
		}
		s.solveCuts()
		got := s.sse()
		opt := optimumSSE(w, bits)
		if math.Abs(got-opt) > 1e-9*opt {
			t.Errorf("bits %d: SSE %.8g vs optimum %.8g (ratio %.6f)", bits, got, opt, got/opt)
		}
		t.Logf("bits %d: %d distinct, SSE/optimum %.6f", bits, len(s.val), got/opt)
	}
}

// TestQualityNormal is the acceptance test: N(0,1) fp16 2048×8192, groups of
// 8 rows; MSE/variance ≤ 0.0095 at 4 bits and ≤ 0.00063 at 6 bits.
func TestQualityNormal(t *testing.T) {
	w := normal2048x8192()
	for _, tc := range []struct {
		bits  int
		limit float64
	}{{4, 0.0095}, {6, 0.00063}} {
		p, err := Palettize(w, []int64{2048, 8192}, Options{Bits: tc.bits})
		if err != nil {
			t.Fatal(err)
		}
		mse, v := Error(w, p)
		if r := mse / v; r > tc.limit {
			t.Errorf("bits %d: MSE/var %.6f > %g", tc.bits, r, tc.limit)
		} else {
			t.Logf("bits %d: MSE/var %.6f (limit %g)", tc.bits, r, tc.limit)
		}
	}
}

// loadTiny reads every tensor of the tiny model's BF16 safetensors file and
// converts it to fp16.
func loadTiny(t testing.TB) []Tensor {
	t.Helper()
	data, err := os.ReadFile("../../testdata/tiny-llama-fortunes/bf16/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 8 {
		t.Fatal("short safetensors file")
	}
	hl := binary.LittleEndian.Uint64(data)
	if hl > uint64(len(data)-8) {
		t.Fatal("bad header length")
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+hl], &hdr); err != nil {
		t.Fatal(err)
	}
	body := data[8+hl:]
	var out []Tensor
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			Dtype   string   `json:"dtype"`
			Shape   []int64  `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatal(err)
		}
		if info.Dtype != "BF16" || info.Offsets[1] > int64(len(body)) || info.Offsets[0] > info.Offsets[1] {
			t.Fatalf("%s: unexpected %+v", name, info)
		}
		b := body[info.Offsets[0]:info.Offsets[1]]
		w := make([]uint16, len(b)/2)
		for i := range w {
			w[i] = uint16(fp16.FromFloat32(fp16.BF16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))))
		}
		out = append(out, Tensor{Name: name, Shape: info.Shape, Data: w})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// TestNeverWorseThanLloyd palettizes every tensor of the tiny trained model
// (1-D norm weights included) and requires an MSE no larger than plain Lloyd
// k-means from the same quantile seeds.
func TestNeverWorseThanLloyd(t *testing.T) {
	tensors := loadTiny(t)
	if len(tensors) != 39 {
		t.Fatalf("%d tensors, want 39", len(tensors))
	}
	for _, bits := range []int{2, 4, 6} {
		var better int
		var sumOurs, sumLloyd float64
		for _, tn := range tensors {
			o := Options{Bits: bits}
			p, err := Palettize(tn.Data, tn.Shape, o)
			if err != nil {
				t.Fatalf("%s: %v", tn.Name, err)
			}
			q, err := LloydBaseline(tn.Data, tn.Shape, o)
			if err != nil {
				t.Fatalf("%s: %v", tn.Name, err)
			}
			checkPalette(t, tn.Data, q)
			ours, _ := Error(tn.Data, p)
			base, _ := Error(tn.Data, q)
			if ours > base {
				t.Errorf("bits %d %s: MSE %.6g worse than Lloyd %.6g", bits, tn.Name, ours, base)
			}
			if ours < base {
				better++
			}
			n := float64(len(tn.Data))
			sumOurs += ours * n
			sumLloyd += base * n
		}
		t.Logf("bits %d: better than Lloyd on %d/%d tensors; total SSE %.6g vs Lloyd %.6g", bits, better, len(tensors), sumOurs, sumLloyd)
	}
}

func TestEligible(t *testing.T) {
	tests := []struct {
		shape []int64
		group int
		want  bool
	}{
		{[]int64{128, 128}, 8, true},
		{[]int64{64, 32}, 8, false}, // exactly 2048 elements: not more
		{[]int64{64, 33}, 8, true},
		{[]int64{4096}, 8, false}, // rank 1
		{[]int64{12, 1000}, 8, false},
		{[]int64{12, 1000}, 4, true},
		{[]int64{1024, 128, 1, 1}, 0, true},
		{[]int64{1024, 0}, 8, false},
		{nil, 8, false},
	}
	for _, tc := range tests {
		if got := Eligible(tc.shape, tc.group); got != tc.want {
			t.Errorf("Eligible(%v, %d) = %v, want %v", tc.shape, tc.group, got, tc.want)
		}
	}
}

func TestErrors(t *testing.T) {
	ok := make([]uint16, 16*4)
	nan := slices.Clone(ok)
	nan[37] = 0x7e00
	inf := slices.Clone(ok)
	inf[3] = 0xfc00
	tests := []struct {
		name  string
		w     []uint16
		shape []int64
		opts  Options
		is    error
		msg   string
	}{
		{"bits 5", ok, []int64{16, 4}, Options{Bits: 5}, ErrUnsupported, ""},
		{"bits 0", ok, []int64{16, 4}, Options{}, ErrUnsupported, ""},
		{"count mismatch", ok, []int64{16, 5}, Options{Bits: 4}, nil, "elements"},
		{"not divisible", ok, []int64{4, 16}, Options{Bits: 4}, nil, "divisible"},
		{"scalar", ok[:1], nil, Options{Bits: 4}, nil, "scalar"},
		{"zero dim", nil, []int64{0, 4}, Options{Bits: 4}, nil, "shape"},
		{"negative group", ok, []int64{16, 4}, Options{Bits: 4, GroupSize: -8}, nil, "group"},
		{"NaN", nan, []int64{16, 4}, Options{Bits: 4}, nil, "weight 37"},
		{"-Inf", inf, []int64{16, 4}, Options{Bits: 4, Workers: 3}, nil, "weight 3 "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []func([]uint16, []int64, Options) (*Palette, error){Palettize, LloydBaseline} {
				p, err := f(tc.w, tc.shape, tc.opts)
				if err == nil || p != nil {
					t.Fatalf("no error (palette %v)", p != nil)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %v, want %v", err, tc.is)
				}
				if !strings.HasPrefix(err.Error(), "quant: ") || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q lacks prefix or %q", err, tc.msg)
				}
			}
		})
	}
}

// TestNearestHalf compares the float64→half rounding the LUT uses
// (fp16.FromFloat64) with a brute-force search over the neighbouring half
// values in this package's ordering.
func TestNearestHalf(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for i := 0; i < 200000; i++ {
		var x float64
		switch i % 3 {
		case 0:
			x = rng.NormFloat64()
		case 1: // exact midpoints between halves, ties to even
			h := uint16(rng.IntN(0x7bff))
			x = (halfTable[h] + halfTable[h+1]) / 2
			if rng.IntN(2) == 0 {
				x = -x
			}
		case 2: // just off a midpoint by less than float32 resolution
			h := uint16(rng.IntN(0x7bff))
			x = (halfTable[h] + halfTable[h+1]) / 2
			x += x * 1e-12 * float64(rng.IntN(3)-1)
		}
		got := uint16(fp16.FromFloat64(x))
		gd := math.Abs(halfTable[got] - x)
		k := orderKey(got)
		for _, nk := range []uint16{k - 1, k + 1} {
			c := keyHalf(nk)
			if c&0x7c00 == 0x7c00 {
				continue
			}
			d := math.Abs(halfTable[c] - x)
			if d < gd || (d == gd && got&1 == 1) {
				t.Fatalf("fp16.FromFloat64(%.17g) = %#x (%g), but %#x (%g) is nearer or even", x, got, halfTable[got], c, halfTable[c])
			}
		}
	}
}

func TestOrderKey(t *testing.T) {
	prev := math.Inf(-1)
	for k := 0; k < 1<<16; k++ {
		h := keyHalf(uint16(k))
		if h&0x7c00 == 0x7c00 { // non-finite sorts outside the finite keys
			if k > keyNegNonFinite && k < keyPosNonFinite {
				t.Fatalf("key %#x → non-finite %#x inside the finite range", k, h)
			}
			continue
		}
		if h == 0x8000 { // −0 shares +0's key
			continue
		}
		if orderKey(h) != uint16(k) {
			t.Fatalf("orderKey(keyHalf(%#x)) = %#x", k, orderKey(h))
		}
		if v := halfTable[h]; !(v > prev) && !(v == 0 && prev == 0) {
			t.Fatalf("key %#x value %g not above %g", k, v, prev)
		} else {
			prev = v
		}
	}
	if orderKey(0x8000) != orderKey(0) {
		t.Error("−0 not folded onto +0")
	}
}

func TestPackedIndices(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	w := randWeights(rng, 8*37, 1)
	for _, bits := range []int{3, 4, 6} {
		p, err := Palettize(w, []int64{8, 37}, Options{Bits: bits})
		if err != nil {
			t.Fatal(err)
		}
		packed := p.PackedIndices()
		if len(packed) != bitpack.PackedLen(len(w), bits) {
			t.Fatalf("packed %d bytes, want %d", len(packed), bitpack.PackedLen(len(w), bits))
		}
		back, err := bitpack.Unpack(nil, packed, len(w), bits)
		if err != nil || !bytes.Equal(back, p.Indices) {
			t.Fatalf("bits %d: unpacked indices differ (%v)", bits, err)
		}
	}
}

func TestBenchTable(t *testing.T) {
	if testing.Short() {
		t.Skip("palettizes the 2048×8192 matrix twice")
	}
	var buf bytes.Buffer
	rows, err := BenchTable(&buf, []BenchSet{NormalSet(), {Title: "tiny", Tensors: loadTiny(t)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
	// normal + 30 eligible tiny tensors (+ total) per bit width.
	if len(rows) != 2*(1+30+1) {
		t.Fatalf("%d rows", len(rows))
	}
	for _, r := range rows {
		if r.Seconds <= 0 || r.MSEVar <= 0 || r.MSEVar > 0.1 || r.Weights <= 0 {
			t.Errorf("implausible row %+v", r)
		}
	}
	if rows[0].Name != "normal 2048x8192" || rows[0].MSEVar > 0.0095 {
		t.Errorf("first row %+v", rows[0])
	}
	if !strings.Contains(buf.String(), "total (30 tensors)") || !strings.Contains(buf.String(), "tiny, 6-bit") {
		t.Error("no total row or set title")
	}
}

// TestGroupSweep: one row per bit width and group size, with the group
// count the size implies, and the weights a bad size cannot split refused.
func TestGroupSweep(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	w := randWeights(rng, 8*65536, 1)
	var buf bytes.Buffer
	rows, err := GroupSweep(&buf, w, 1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2*len(SweepGroupSizes) {
		t.Fatalf("%d rows", len(rows))
	}
	for i, r := range rows {
		if r.GroupWeights != SweepGroupSizes[i%len(SweepGroupSizes)] || r.Bits != []int{4, 6}[i/len(SweepGroupSizes)] || r.Weights != len(w) || !(r.NsPerWeight() > 0) || r.Distinct < len(w)/8 || r.Distinct > len(w) {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 1+len(rows) {
		t.Errorf("%d lines:\n%s", n, buf.String())
	}
	if _, err := GroupSweep(io.Discard, w[:1000], 1, Options{}); err == nil {
		t.Error("1000 weights: no error")
	}
}

// TestAwkwardDistributions runs the large-group path on distributions that
// stress the λ search and the windows: heavy tails, a dominant spike, far-apart
// modes, a few outliers. Each must satisfy the palette contract, beat plain
// Lloyd from the quantile seeds, and reach the exact optimum (to rounding).
func TestAwkwardDistributions(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	const n = 8 * 2500
	gens := map[string]func() float64{
		"cauchy": func() float64 { return 0.01 * math.Tan(math.Pi*(rng.Float64()-0.5)) },
		"spike": func() float64 {
			if rng.IntN(100) < 90 {
				return 0
			}
			return rng.NormFloat64()
		},
		"bimodal": func() float64 { return float64(2*rng.IntN(2)-1)*40 + rng.NormFloat64() },
		"outliers": func() float64 {
			if rng.IntN(5000) == 0 {
				return 3000 * rng.NormFloat64()
			}
			return 0.02 * rng.NormFloat64()
		},
	}
	for _, name := range []string{"cauchy", "spike", "bimodal", "outliers"} {
		for _, bits := range []int{2, 4, 6} {
			t.Run(fmt.Sprintf("%s/bits=%d", name, bits), func(t *testing.T) {
				w := make([]uint16, n)
				for i := range w {
					w[i] = half(gens[name]())
				}
				p, err := Palettize(w, []int64{8, n / 8}, Options{Bits: bits})
				if err != nil {
					t.Fatal(err)
				}
				checkPalette(t, w, p)
				q, err := LloydBaseline(w, []int64{8, n / 8}, Options{Bits: bits})
				if err != nil {
					t.Fatal(err)
				}
				ours, _ := Error(w, p)
				base, _ := Error(w, q)
				if ours > base {
					t.Errorf("MSE %.6g worse than Lloyd %.6g", ours, base)
				}
				s := newSolver(bits)
				s.distinct(w)
				if len(s.val) <= s.k {
					return
				}
				s.solveCuts()
				got := s.sse()
				opt := optimumSSE(w, bits)
				if math.Abs(got-opt) > 1e-9*opt+1e-12 {
					t.Errorf("%d distinct: SSE %.8g, optimum %.8g", len(s.val), got, opt)
				}
				t.Logf("%d distinct: SSE/optimum %.6f; MSE vs Lloyd %.4f", len(s.val), got/opt, ours/base)
			})
		}
	}
}

// TestErrorMalformedPalette: Error gives NaN, and Dense nil, for palettes
// this package would not make, instead of panicking.
func TestErrorMalformedPalette(t *testing.T) {
	w := make([]uint16, 16)
	for i := range w {
		w[i] = uint16(fp16.FromFloat32(float32(i % 2)))
	}
	good := func() *Palette {
		idx := make([]uint8, 16)
		for i := range idx {
			idx[i] = uint8(i % 2)
		}
		lut := []uint16{0, 0x3c00, 0, 0x3c00}
		return &Palette{Bits: 1, GroupSize: 8, Shape: []int64{16, 1}, Indices: idx, LUT: lut}
	}
	if mse, v := Error(w, good()); mse != 0 || v != 0.25 {
		t.Fatalf("well-formed palette: mse %g variance %g, want 0 and 0.25", mse, v)
	}
	for _, tc := range []struct {
		name string
		bad  func(p *Palette)
	}{
		{"short LUT", func(p *Palette) { p.LUT = p.LUT[:3] }},
		{"zero group size", func(p *Palette) { p.GroupSize = 0 }},
		{"no shape", func(p *Palette) { p.Shape = nil }},
		{"groups do not divide indices", func(p *Palette) { p.GroupSize = 5 }},
		{"zero bits", func(p *Palette) { p.Bits = 0 }},
		{"negative bits", func(p *Palette) { p.Bits = -1 }},
		{"nine bits", func(p *Palette) { p.Bits = 9 }},
		{"index out of range", func(p *Palette) { p.Indices[11] = 2 }},
	} {
		p := good()
		tc.bad(p)
		if d := p.Dense(); d != nil {
			t.Errorf("%s: Dense = %v, want nil", tc.name, d)
		}
		if mse, v := Error(w, p); !math.IsNaN(mse) || !math.IsNaN(v) {
			t.Errorf("%s: Error = %g, %g, want NaN", tc.name, mse, v)
		}
	}
}

// TestLentIndices: lent index storage full of junk, with room to spare,
// gives the palette that fresh storage gives, and is the storage used;
// storage too small is ignored.
func TestLentIndices(t *testing.T) {
	for _, tn := range loadTiny(t)[:6] {
		if !Eligible(tn.Shape, 0) {
			continue
		}
		for _, bits := range []int{2, 4, 6} {
			want, err := Palettize(tn.Data, tn.Shape, Options{Bits: bits})
			if err != nil {
				t.Fatal(err)
			}
			junk := bytes.Repeat([]byte{0xff}, len(tn.Data)+5)
			got, err := Palettize(tn.Data, tn.Shape, Options{Bits: bits, Indices: junk[:1]})
			if err != nil {
				t.Fatal(err)
			}
			if paletteHash(got) != paletteHash(want) || &got.Indices[0] != &junk[0] || len(got.Indices) != len(tn.Data) {
				t.Errorf("%s bits %d: lent storage gives another palette or was not used", tn.Name, bits)
			}
			small, err := Palettize(tn.Data, tn.Shape, Options{Bits: bits, Indices: make([]uint8, len(tn.Data)-1)})
			if err != nil || paletteHash(small) != paletteHash(want) {
				t.Errorf("%s bits %d: storage too small: %v", tn.Name, bits, err)
			}
		}
	}
}
