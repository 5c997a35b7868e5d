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

// BenchSet is a titled list of tensors for BenchTable.
type BenchSet struct {
	Title   string
	Tensors []Tensor
}

// NormalSet is the seeded N(0,1) 2048×8192 fp16 matrix
// (NormalMatrix(2048, 8192, 1)), the classic palettization benchmark.
func NormalSet() BenchSet {
	return BenchSet{Title: "N(0,1) fp16 matrix", Tensors: []Tensor{{Name: "normal 2048x8192", Shape: []int64{2048, 8192}, Data: NormalMatrix(2048, 8192, 1)}}}
}

// BenchRow is one measurement of BenchTable.
type BenchRow struct {
	Set     string
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

// BenchTable palettizes, at 4 and 6 bits, every tensor of each set that
// Eligible accepts, and writes a table of wall seconds, million weights per
// second and MSE/variance to w. A set with more than one tensor is followed
// by a total whose MSE/variance is the sum of squared errors over the sum of
// n·variance and whose speed is its weights over its seconds. opts.Bits is
// ignored; GroupSize and Workers apply. It returns the rows.
func BenchTable(w io.Writer, sets []BenchSet, opts Options) ([]BenchRow, error) {
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
		for _, set := range sets {
			fmt.Fprintf(tw, "%s, %d-bit\t\t\t\t\t\t\n", set.Title, bits)
			tot := BenchRow{Set: set.Title, Bits: bits}
			count := 0
			var sumSE, sumVar float64
			for _, t := range set.Tensors {
				if !Eligible(t.Shape, o.GroupSize) {
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
				emit(BenchRow{Set: set.Title, Name: t.Name, Bits: bits, Weights: len(t.Data), Seconds: sec, MSEVar: mse / v})
			}
			if count > 1 {
				tot.Name = fmt.Sprintf("total (%d tensors)", count)
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

// SweepGroupSizes are the group sizes, in weights, of GroupSweep.
var SweepGroupSizes = []int{1024, 2048, 4096, 8192, 16384, 32768, 65536}

// SweepRow is one measurement of GroupSweep.
type SweepRow struct {
	Bits, GroupWeights, Weights int
	Distinct                    int // distinct fp16 values summed over the groups
	Seconds                     float64
}

// NsPerWeight is the wall time per weight in nanoseconds.
func (r SweepRow) NsPerWeight() float64 { return r.Seconds * 1e9 / float64(r.Weights) }

// NsPerDistinct is the wall time per distinct value of a group, in
// nanoseconds: the solver's work grows with the distinct values, which a
// group of real weights has fewer of, relative to its size, the larger it is.
func (r SweepRow) NsPerDistinct() float64 { return r.Seconds * 1e9 / float64(max(r.Distinct, 1)) }

// GroupSweep palettizes the same weights w (fp16 bits; len(w) must be a
// multiple of 8·65536) at 4 and 6 bits cut into groups of each of
// SweepGroupSizes weights (GroupSize rows of groupWeights/GroupSize
// columns, opts.GroupSize or 8 rows), best of reps runs each, and writes
// nanoseconds per weight and per distinct value: the per-group cost is
// proportional to the group's distinct values (at most its size), so the
// cost per distinct value stays flat while the cost per weight falls where
// larger groups repeat values. It returns the rows.
func GroupSweep(w io.Writer, data []uint16, reps int, opts Options) ([]SweepRow, error) {
	g := opts.GroupSize
	if g == 0 {
		g = DefaultGroupSize
	}
	var rows []SweepRow
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "bits\tgroup (weights)\tgroups\tdistinct/group\tseconds\tns/weight\tns/distinct\tMw/s\t")
	s := newSolver(1)
	for _, bits := range []int{4, 6} {
		for _, gw := range SweepGroupSizes {
			if gw%g != 0 || len(data)%gw != 0 {
				return rows, fmt.Errorf("quant: sweep: %d weights do not split into groups of %d weights of %d rows", len(data), gw, g)
			}
			cols := gw / g
			shape := []int64{int64(len(data) / cols), int64(cols)}
			o := opts
			o.Bits, o.GroupSize = bits, g
			distinct := 0
			for i := 0; i < len(data); i += gw {
				s.distinct(data[i : i+gw])
				distinct += len(s.val)
			}
			best := 0.0
			for r := 0; r < max(reps, 1); r++ {
				start := time.Now()
				if _, err := Palettize(data, shape, o); err != nil {
					return rows, fmt.Errorf("quant: sweep: %w", err)
				}
				if sec := time.Since(start).Seconds(); r == 0 || sec < best {
					best = sec
				}
			}
			row := SweepRow{Bits: bits, GroupWeights: gw, Weights: len(data), Distinct: distinct, Seconds: best}
			rows = append(rows, row)
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.4f\t%.2f\t%.2f\t%.1f\t\n", bits, gw, len(data)/gw, distinct/(len(data)/gw), best, row.NsPerWeight(), row.NsPerDistinct(), float64(len(data))/best/1e6)
		}
	}
	if err := tw.Flush(); err != nil {
		return rows, fmt.Errorf("quant: sweep table: %w", err)
	}
	return rows, nil
}
