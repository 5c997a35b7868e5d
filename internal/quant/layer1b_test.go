package quant

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
)

var (
	layer1BOnce sync.Once
	layer1B     []Tensor
	layer1BErr  error
)

// loadLayer1B returns the matrices of decoder layer 0 of the random
// Llama-3.2-1B-shaped BF16 checkpoint (hf/synth), converted to fp16: q, k, v,
// o, gate, up and down projections, 58.7 M weights.
func loadLayer1B(t testing.TB) []Tensor {
	t.Helper()
	layer1BOnce.Do(func() {
		for _, wt := range synth.Tensors(synth.Llama1B()) {
			if !strings.HasPrefix(wt.Name, "model.layers.0.") || len(wt.Shape) != 2 {
				continue
			}
			var buf bytes.Buffer
			if err := wt.Data(&buf); err != nil {
				layer1BErr = err
				return
			}
			d := make([]uint16, buf.Len()/2)
			if _, err := hf.DecodeFloat16(d, buf.Bytes(), wt.DType); err != nil {
				layer1BErr = err
				return
			}
			layer1B = append(layer1B, Tensor{Name: wt.Name, Shape: wt.Shape, Data: d})
		}
	})
	if layer1BErr != nil {
		t.Fatal(layer1BErr)
	}
	return layer1B
}
