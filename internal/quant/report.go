package quant

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Tensor is a named fp16 weight for BenchTable.
type Tensor struct {
	Name  string
	Shape []int64
	Data  []uint16 // fp16 bits, row-major
}

// BenchRow is one measurement of BenchTable.
type BenchRow struct {
	Name    string
	Bits    int
	Weights int
	Seconds float64
	MSEVar  float64 // mean squared error / variance of the weights
}

// MWPerSecond is the throughput in million weights per second.
func (r BenchRow) MWPerSecond() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Weights) / r.Seconds / 1e6
}

// BenchTable palettizes, at 4 and 6 bits, the seeded N(0,1) 2048×8192 fp16
// matrix (NormalMatrix(2048, 8192, 1)) and then every tensor of model that
// Eligible accepts, and writes a table of wall seconds, million weights per
// second and MSE/variance to w. The model rows are followed by a total whose
// MSE/variance is the sum of squared errors over the sum of n·variance.
// opts.Bits is ignored; GroupSize and Workers apply. It returns the rows.
func BenchTable(w io.Writer, model []Tensor, opts Options) ([]BenchRow, error) {
	normal := []Tensor{{Name: "normal 2048x8192", Shape: []int64{2048, 8192}, Data: NormalMatrix(2048, 8192, 1)}}
	var rows []BenchRow
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tensor\tbits\tweights\tseconds\tMw/s\tMSE/var\t")
	emit := func(r BenchRow) {
		rows = append(rows, r)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.4f\t%.1f\t%.6f\t\n", r.Name, r.Bits, r.Weights, r.Seconds, r.MWPerSecond(), r.MSEVar)
	}
	for _, bits := range []int{4, 6} {
		o := opts
		o.Bits = bits
		for _, set := range [][]Tensor{normal, model} {
			var tot BenchRow
			count := 0
			var sumSE, sumVar float64
			for _, t := range set {
				if set[0].Name != normal[0].Name && !Eligible(t.Shape, o.GroupSize) {
					continue
				}
				start := time.Now()
				p, err := Palettize(t.Data, t.Shape, o)
				sec := time.Since(start).Seconds()
				if err != nil {
					return rows, fmt.Errorf("quant: bench %s: %w", t.Name, err)
				}
				mse, v := Error(t.Data, p)
				n := float64(len(t.Data))
				sumSE += mse * n
				sumVar += v * n
				tot.Weights += len(t.Data)
				tot.Seconds += sec
				count++
				emit(BenchRow{Name: t.Name, Bits: bits, Weights: len(t.Data), Seconds: sec, MSEVar: mse / v})
			}
			if count > 1 {
				tot.Name = fmt.Sprintf("total (%d tensors)", count)
				tot.Bits = bits
				tot.MSEVar = sumSE / sumVar
				emit(tot)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return rows, fmt.Errorf("quant: bench table: %w", err)
	}
	return rows, nil
}
