package runtime

import "github.com/anemll/anemll/internal/gemm"

// KernelFlavour names the matrix kernels this build and CPU run ("simd"
// or "purego"): their fp32 summation orders differ, so golden outputs are
// recorded per flavour.
func KernelFlavour() string {
	if useSIMD {
		return "simd"
	}
	return "purego"
}

// WidenedOps lists, as "function/op", the ops of m that read an fp16
// state through a widened fp32 copy (kernels that do not read half bits).
func WidenedOps(m *Model) []string {
	var out []string
	for _, name := range m.names {
		for _, n := range m.funcs[name].nodes {
			if len(n.widen) > 0 {
				out = append(out, name+"/"+n.op.Name)
			}
		}
	}
	return out
}

// setSIMD selects the SIMD kernels (on, where present) or plain Go, here
// and in package gemm, and returns a func restoring the previous choice.
func setSIMD(on bool) (restore func()) {
	prev, prevGemm := useSIMD, gemm.SetSIMD(on)
	useSIMD = on && haveSIMD
	return func() {
		useSIMD = prev
		gemm.SetSIMD(prevGemm)
	}
}
