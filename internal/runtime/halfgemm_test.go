package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/gemm"
	"github.com/anemll/anemll/internal/gemm/gemmtest"
	"github.com/anemll/anemll/internal/mil"
)

// randHalfs returns n random fp16 bit patterns of normal-ish weights, with
// a few subnormals, zeros of both signs and large values mixed in.
func randHalfs(r *rand.Rand, n int) []uint16 {
	h := make([]uint16, n)
	for i := range h {
		switch i % 97 {
		case 5:
			h[i] = uint16(r.IntN(0x400)) | uint16(r.IntN(2))<<15 // subnormal
		case 11:
			h[i] = 0x8000 // −0
		case 13:
			h[i] = uint16(fp16.FromFloat32(float32(r.NormFloat64() * 1000)))
		default:
			h[i] = uint16(fp16.FromFloat32(float32(r.NormFloat64() * 0.05)))
		}
	}
	return h
}

func testGemmHalf(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, sz := range [][3]int{{1, 1, 1}, {4, 1, 7}, {5, 3, 9}, {8, 1, 16}, {67, 1, 33}, {130, 5, 100}, {64, 64, 64}, {7, 9, 0}, {200, 2, 2048}} {
		nw, nx, k := sz[0], sz[1], sz[2]
		h := randHalfs(r, nw*k)
		wf := make([]float32, len(h))
		for i, v := range h {
			wf[i] = fp16.Bits(v).Float32()
		}
		x := gemmtest.Guarded(r, nx*k)
		// Reference: the fp32-weight kernel in the conv orientation.
		want := make([]float32, nw*nx)
		gemm.NT(want, wf, x, nw, nx, k)
		for p := range want {
			iw, jx := p/nx, p%nx
			ref, tol := gemmtest.DotBound(wf[iw*k:(iw+1)*k], x[jx*k:(jx+1)*k])
			if math.Abs(float64(want[p])-ref) > tol {
				t.Fatalf("%v: gemm.NT c[%d][%d] = %v, want %v ± %g", sz, iw, jx, want[p], ref, tol)
			}
		}
		rows := make([]float32, nw*nx)
		cols := make([]float32, nw*nx)
		for i := range rows {
			rows[i], cols[i] = 12345, 12345
		}
		gemmHalf(rows, h, x, nw, nx, k, true)
		gemmHalf(cols, h, x, nw, nx, k, false)
		for iw := 0; iw < nw; iw++ {
			for jx := 0; jx < nx; jx++ {
				w := want[iw*nx+jx]
				if g := rows[iw*nx+jx]; math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("%v: rows c[%d][%d] = %v, fp32 weights give %v", sz, iw, jx, g, w)
				}
				if g := cols[jx*nw+iw]; math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("%v: cols c[%d][%d] = %v, fp32 weights give %v", sz, jx, iw, g, w)
				}
			}
		}
	}
	// halfToFloat widens every bit pattern exactly (NaNs stay NaN).
	all := make([]uint16, 1<<16)
	for i := range all {
		all[i] = uint16(i)
	}
	f := make([]float32, len(all))
	halfToFloat(f[:len(all)-3], all[:len(all)-3]) // odd length: SIMD body + tail
	halfToFloat(f[len(all)-3:], all[len(all)-3:])
	for i, v := range f {
		w := fp16.Bits(i).Float32()
		if math.Float32bits(v) != math.Float32bits(w) && !(v != v && w != w) {
			t.Fatalf("halfToFloat(%#04x) = %v, want %v", i, v, w)
		}
	}
}

func TestGemmHalf(t *testing.T) { testGemmHalf(t) }

// halfProgram builds y = linear(x, W) and z = conv(x4, W4) where W/W4 are
// 80×67 fp16 constants; extra uses of W (as an output or through another
// op) depend on share.
func halfProgram(t *testing.T, w []float32, share string) (*Function, *Tensor, *Tensor) {
	t.Helper()
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	x := b.Input("x", mil.TensorType(mil.Float16, 3, 67))
	x4 := b.Input("x4", mil.TensorType(mil.Float16, 1, 67, 1, 3))
	wc := b.Const("w", mil.FP16FromFloat32([]int64{80, 67}, w))
	w4 := b.Const("w4", mil.FP16FromFloat32([]int64{80, 67, 1, 1}, w))
	y := b.Op("linear", "y", mil.In{"x": x, "weight": wc})
	z := b.Op("conv", "z", mil.In{"x": x4, "weight": w4})
	outs := []*mil.Var{y, z}
	switch share {
	case "output":
		outs = append(outs, wc)
	case "op":
		outs = append(outs, b.Op("mul", "w2", mil.In{"x": wc, "y": mil.F16(2)}))
	}
	b.Output(outs...)
	f, err := loadBuilt(b)
	if err != nil {
		t.Fatal(err)
	}
	wt := f.consts[f.nodes[0].args["weight"][0]]
	w4t := f.consts[f.nodes[1].args["weight"][0]]
	return f, wt, w4t
}

func testHalfWeightsLoad(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	w := randF(r, 80*67)
	xv := randF(r, 3*67)
	feed := map[string]*Tensor{
		"x":  NewFloat16([]int{3, 67}, xv),
		"x4": NewFloat16([]int{1, 67, 1, 3}, transposeF(xv, 3, 67)),
	}
	run := func(f *Function) map[string]*Tensor {
		res, err := f.Predict(feed, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	defer func(h bool) { halfWeights = h }(halfWeights)
	halfWeights = false
	plain, wt, _ := halfProgram(t, w, "")
	if wt.half != nil || wt.F == nil {
		t.Fatal("halfWeights off: weight was packed")
	}
	want := run(plain)
	halfWeights = true
	for _, share := range []string{"", "output", "op"} {
		f, wt, w4t := halfProgram(t, w, share)
		if packed := wt.half != nil; packed != (share == "") || (wt.F == nil) != packed {
			t.Fatalf("share %q: linear weight packed = %v, F nil = %v", share, packed, wt.F == nil)
		}
		if w4t.half == nil || w4t.F != nil {
			t.Fatalf("share %q: conv weight not packed", share)
		}
		got := run(f)
		for _, name := range []string{"y", "z"} {
			wantTensor(t, got[name], mil.Float16, want[name].Shape, want[name].F, nil)
		}
		if share == "output" {
			wantTensor(t, got["w"], mil.Float16, []int{80, 67}, NewFloat16([]int{80, 67}, w).F, nil)
		}
	}
}

func TestHalfWeightsLoad(t *testing.T) { testHalfWeightsLoad(t) }

// transposeF returns the cols×rows transpose of a rows×cols matrix.
func transposeF(a []float32, rows, cols int) []float32 {
	out := make([]float32, len(a))
	transpose2(out, a, rows, cols)
	return out
}

// TestHalfWeightKernels runs the matrix op tests with every fp16 weight
// packed (halfWeightMin 1), on the SIMD kernels if present and on plain Go.
func TestHalfWeightKernels(t *testing.T) {
	defer func(h bool, m int) { halfWeights, halfWeightMin = h, m }(halfWeights, halfWeightMin)
	defer setSIMD(useSIMD)()
	halfWeights, halfWeightMin = true, 1
	paths := []bool{false}
	if haveSIMD {
		paths = append(paths, true)
	}
	for _, simd := range paths {
		setSIMD(simd)
		name := "plain"
		if simd {
			name = "simd"
		}
		t.Run(name, func(t *testing.T) {
			t.Run("GemmHalf", testGemmHalf)
			t.Run("HalfWeightsLoad", testHalfWeightsLoad)
			t.Run("ConvAgainstNaive", TestConvAgainstNaive)
			t.Run("LinearMatmul", TestLinearMatmul)
			t.Run("LayerPrefillMatchesDecode", TestLayerPrefillMatchesDecode)
		})
	}
}

// Only convs that always take opConv's 1×1 path get packed fp16 weights;
// the others keep fp32 so convDirect never widens a weight per call.
func TestHalfWeightsConvPath(t *testing.T) {
	defer func(h bool, m int) { halfWeights, halfWeightMin = h, m }(halfWeights, halfWeightMin)
	halfWeights, halfWeightMin = true, 1
	r := rand.New(rand.NewPCG(5, 6))
	xv := randF(r, 4*3*3)
	for _, tc := range []struct {
		name   string
		kernel int64
		params mil.In
		packed bool
	}{
		{"1x1", 1, mil.In{}, true},
		{"1x1 valid", 1, mil.In{"pad_type": "valid"}, true},
		{"1x1 same", 1, mil.In{"pad_type": "same"}, true},
		{"1x1 custom zero", 1, mil.In{"pad_type": "custom", "pad": []int{0, 0, 0, 0}}, true},
		{"1x1 explicit ones", 1, mil.In{"strides": []int{1, 1}, "dilations": []int{2, 2}, "groups": 1}, true},
		{"1x1 custom pad", 1, mil.In{"pad_type": "custom", "pad": []int{0, 1, 0, 0}}, false},
		{"1x1 stride 2", 1, mil.In{"strides": []int{2, 2}}, false},
		{"1x1 groups 2", 1, mil.In{"groups": 2}, false},
		{"3x3 same", 3, mil.In{"pad_type": "same"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cpg := int64(4)
			if g, ok := tc.params["groups"].(int); ok {
				cpg = 4 / int64(g)
			}
			w := randF(r, int(6*cpg*tc.kernel*tc.kernel))
			prog := func(half bool) (*Function, *Tensor) {
				halfWeights = half
				b := mil.NewBuilder("main", mil.OpsetIOS18)
				x := b.Input("x", mil.TensorType(mil.Float16, 1, 4, 3, 3))
				in := mil.In{"x": x, "weight": b.Const("w", mil.FP16FromFloat32([]int64{6, cpg, tc.kernel, tc.kernel}, w))}
				for k, v := range tc.params {
					in[k] = v
				}
				b.Output(b.Op("conv", "y", in))
				f, err := loadBuilt(b)
				if err != nil {
					t.Fatal(err)
				}
				return f, f.consts[f.nodes[0].args["weight"][0]]
			}
			f, wt := prog(true)
			if packed := wt.half != nil; packed != tc.packed || (wt.F == nil) != packed {
				t.Fatalf("packed = %v (F nil = %v), want %v", packed, wt.F == nil, tc.packed)
			}
			plain, _ := prog(false)
			feed := map[string]*Tensor{"x": NewFloat16([]int{1, 4, 3, 3}, xv)}
			got, err := f.Predict(feed, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, err := plain.Predict(feed, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantTensor(t, got["y"], mil.Float16, want["y"].Shape, want["y"].F, nil)
		})
	}
}
