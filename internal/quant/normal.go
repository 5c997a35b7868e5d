package quant

import (
	"math/rand/v2"

	"github.com/anemll/anemll/internal/fp16"
)

// NormalMatrix returns rows×cols fp16 bit patterns drawn from N(0, 1) with a
// PCG generator seeded by seed, the synthetic matrix of BenchTable.
func NormalMatrix(rows, cols int, seed uint64) []uint16 {
	rng := rand.New(rand.NewPCG(seed, 0x616e656d6c6c))
	w := make([]uint16, rows*cols)
	for i := range w {
		w[i] = uint16(fp16.FromFloat32(float32(rng.NormFloat64())))
	}
	return w
}
