package hf

// SetFloat16BlockBytes sets the block size of Float16Rows for a test and
// returns a func that restores it.
func SetFloat16BlockBytes(n int64) (restore func()) {
	old := float16BlockBytes
	float16BlockBytes = n
	return func() { float16BlockBytes = old }
}
