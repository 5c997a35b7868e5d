package quant

// Request is one weight a converter asks to palettize: the fp16 bit
// patterns of a tensor (row-major, Shape[0] output channels) with the
// width and group size to use, and where the tensor came from so that a
// caller can attach per-tensor information (calibration statistics) by
// name.
type Request struct {
	// Name is the Hugging Face tensor the weight was read from; Row0 and
	// Row1 give the rows [Row0, Row1) of it the weight holds (both 0: all
	// rows), as for the splits of an LM head.
	Name       string
	Row0, Row1 int64
	// Weights are fp16 bit patterns in the weight's own layout, Shape its
	// shape (rows beyond the tensor, padding an LM-head split, are zero).
	Weights []uint16
	Shape   []int64
	// Bits is the index width; GroupSize the output channels per LUT.
	Bits, GroupSize int
	// Stats, if set, are the calibration statistics of the weight's input
	// (rows matching Weights); PalettizeRequest then minimises the output
	// error on them instead of the weight error.
	Stats *Stats
	// Indices, if set, is storage the caller lends for the indices (see
	// Options.Indices); a palettizer may use it or not.
	Indices []uint8
}
