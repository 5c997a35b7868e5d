package runtime

// KernelFlavour names the matrix kernels this build and CPU run ("simd"
// or "purego"): their fp32 summation orders differ, so golden outputs are
// recorded per flavour.
func KernelFlavour() string {
	if useSIMD {
		return "simd"
	}
	return "purego"
}
