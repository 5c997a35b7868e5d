package decoder

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/hf"
)

// InvFreq returns the d/2 rotary inverse frequencies exactly as Hugging
// Face computes them, in float64: 1/θ^(2i/d), divided by factor for
// "linear" scaling, and reshaped per frequency band for "llama3" scaling
// (transformers' _compute_llama3_parameters).
func InvFreq(d int, theta float64, rs *hf.RopeScaling) ([]float64, error) {
	if d <= 0 || d%2 != 0 {
		return nil, fmt.Errorf("decoder: rope: head_dim %d must be positive and even", d)
	}
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(theta, float64(2*i)/float64(d))
	}
	if rs == nil {
		return inv, nil
	}
	switch rs.RopeType {
	case "":
	case "linear":
		for i := range inv {
			inv[i] /= rs.Factor
		}
	case "llama3":
		orig := float64(rs.OriginalMaxPositionEmbeddings)
		lowWavelen := orig / rs.LowFreqFactor
		highWavelen := orig / rs.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen > lowWavelen:
				inv[i] = f / rs.Factor
			case wavelen < highWavelen:
				// unchanged
			default:
				smooth := (orig/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				inv[i] = (1-smooth)*f/rs.Factor + smooth*f
			}
		}
	default:
		return nil, fmt.Errorf("decoder: rope: rope_type %q: %w", rs.RopeType, hf.ErrUnsupported)
	}
	return inv, nil
}

// RopeTables returns row-major cos and sin tables of rows×d in float64
// for head_dim d, base theta and scaling rs: row p holds cos/sin(p·inv_freq)
// for the first half and again for the second (Hugging Face's emb =
// cat(freqs, freqs)).
func RopeTables(d int, theta float64, rs *hf.RopeScaling, rows int) (cos, sin []float64, err error) {
	inv, err := InvFreq(d, theta, rs)
	if err != nil {
		return nil, nil, err
	}
	if rows < 1 {
		return nil, nil, fmt.Errorf("decoder: rope: %d table rows", rows)
	}
	h := len(inv)
	cos = make([]float64, rows*d)
	sin = make([]float64, rows*d)
	for p := 0; p < rows; p++ {
		for i, f := range inv {
			s, c := math.Sincos(float64(p) * f)
			cos[p*d+i], cos[p*d+h+i] = c, c
			sin[p*d+i], sin[p*d+h+i] = s, s
		}
	}
	return cos, sin, nil
}
