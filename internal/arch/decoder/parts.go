package decoder

import "github.com/anemll/anemll/internal/arch"

// partWeightSet returns a weight set with part p's LUT width and group
// size.
func (c *Converter) partWeightSet(p arch.Part) *weightSet {
	ws := c.newWeightSet(c.LUTBits(p))
	switch p {
	case arch.PartEmbeddings:
		ws.group = c.opts.LUTGroups.Embeddings
	case arch.PartLMHead:
		ws.group = c.opts.LUTGroups.LMHead
	default:
		ws.group = c.opts.LUTGroups.FFN
	}
	return ws
}
