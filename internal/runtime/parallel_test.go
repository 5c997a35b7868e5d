package runtime

import (
	"math"
	"math/rand/v2"
	goruntime "runtime"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// TestLargeElementwiseAndReduce runs ops big enough to take the parallel
// chunked paths (≥ minParallelElems outputs, odd sizes so the last chunk
// is partial) and checks every element against a serial loop, for 1 and 2
// cores.
func TestLargeElementwiseAndReduce(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(0))
	r := rand.New(rand.NewPCG(21, 22))
	const h, rows, cols = 5, 67, 129 // 43215 elements
	x := NewFloat16([]int{1, h, rows, cols}, randF(r, h*rows*cols))
	y := NewFloat16([]int{1, h, rows, cols}, randF(r, h*rows*cols))
	mask := NewFloat16([]int{1, 1, rows, cols}, randF(r, rows*cols))
	type out = map[string]*Tensor
	build := func() *Function {
		b := mil.NewBuilder("main", mil.OpsetIOS18)
		xv := b.Input("x", milType(x))
		yv := b.Input("y", milType(y))
		mv := b.Input("mask", milType(mask))
		add := b.Op("add", "add", mil.In{"x": xv, "y": yv})
		scl := b.Op("mul", "scl", mil.In{"x": xv, "y": mil.F16(0.125)})
		bc := b.Op("add", "bc", mil.In{"x": xv, "y": mv})
		ex := b.Op("exp", "ex", mil.In{"x": xv})
		sm := b.Op("reduce_sum", "sm", mil.In{"x": ex, "axes": []int{-1}, "keep_dims": true})
		mx := b.Op("reduce_max", "mx", mil.In{"x": xv, "axes": []int{-2, -1}})
		mid := b.Op("reduce_sum", "mid", mil.In{"x": xv, "axes": []int{2}})
		b.Output(add, scl, bc, ex, sm, mx, mid)
		f, err := loadBuilt(b)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := build()
	var first out
	for _, procs := range []int{1, 2, 2} {
		goruntime.GOMAXPROCS(procs)
		res, err := f.Predict(out{"x": x, "y": y, "mask": mask}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = res
		}
		for name, got := range res {
			for i, v := range got.F {
				if math.Float32bits(v) != math.Float32bits(first[name].F[i]) {
					t.Fatalf("%s[%d] with %d cores: %v, first run %v", name, i, procs, v, first[name].F[i])
				}
			}
		}
	}
	n := h * rows * cols
	check := func(name string, shape []int, want func(i int) float64) {
		t.Helper()
		got := first[name]
		if !equalInts(got.Shape, shape) {
			t.Fatalf("%s shape %v, want %v", name, got.Shape, shape)
		}
		for i, v := range got.F {
			if w := fp16.Round(float32(want(i))); v != w {
				t.Fatalf("%s[%d] = %v, want %v", name, i, v, w)
			}
		}
	}
	xf, yf, mf := x.F, y.F, mask.F
	check("add", x.Shape, func(i int) float64 { return float64(xf[i] + yf[i]) })
	check("scl", x.Shape, func(i int) float64 { return float64(xf[i] * 0.125) })
	check("bc", x.Shape, func(i int) float64 { return float64(xf[i] + mf[i%(rows*cols)]) })
	check("ex", x.Shape, func(i int) float64 { return float64(float32(math.Exp(float64(xf[i])))) })
	exf := first["ex"].F
	check("sm", []int{1, h, rows, 1}, func(i int) float64 {
		var s float64
		for j := 0; j < cols; j++ {
			s += float64(exf[i*cols+j])
		}
		return float64(float32(s))
	})
	check("mx", []int{1, h}, func(i int) float64 {
		m := math.Inf(-1)
		for j := 0; j < rows*cols; j++ {
			m = max(m, float64(xf[i*rows*cols+j]))
		}
		return m
	})
	check("mid", []int{1, h, cols}, func(i int) float64 {
		hh, c := i/cols, i%cols
		var s float64
		for j := 0; j < rows; j++ {
			s += float64(xf[(hh*rows+j)*cols+c])
		}
		return float64(float32(s))
	})
	if n < minParallelElems {
		t.Fatalf("%d elements do not reach the parallel paths", n)
	}
}
