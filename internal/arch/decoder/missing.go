package decoder

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anemll/anemll/internal/fp16"
)

// defaultable reports the neutral value of a tensor the model can do
// without: norm gains are 1 (stored as 0 for families whose gains are
// 1 + w), biases 0. ok is false for every other tensor.
func (c *Converter) defaultable(canonical string) (value float32, ok bool) {
	switch {
	case strings.HasSuffix(canonical, ".bias"):
		return 0, true
	case strings.HasSuffix(canonical, "norm.weight"):
		if c.spec.Family.NormPlusOne {
			return 0, true
		}
		return 1, true
	}
	return 0, false
}

// noteMissing records that the checkpoint lacks canonical tensor n
// (checkpoint name name). Without Options.AllowMissingWeights, or for a
// tensor with no neutral default, it returns the error to report; an
// untied LM head falls back to the embeddings.
func (c *Converter) noteMissing(n, name string) error {
	if !c.opts.AllowMissingWeights {
		return fmt.Errorf("decoder: checkpoint %s has no tensor %q (%s expects it); if it may take its default (norm gain 1, bias 0), pass --allow-missing-weights",
			c.ckpt.Dir, name, c.spec.Family.Name)
	}
	if c.missing == nil {
		c.missing = map[string]bool{}
	}
	if n == "lm_head.weight" {
		c.lmHead = "model.embed_tokens.weight"
		c.missing[n] = true
		return nil
	}
	if _, ok := c.defaultable(n); !ok {
		return fmt.Errorf("decoder: checkpoint %s has no tensor %q (%s expects it), and it has no default: --allow-missing-weights only fills norm gains, biases and an LM head tied to the embeddings",
			c.ckpt.Dir, name, c.spec.Family.Name)
	}
	c.missing[n] = true
	return nil
}

// reportMissing warns once, listing the tensors that take defaults.
func (c *Converter) reportMissing() error {
	if len(c.missing) == 0 {
		return nil
	}
	var names []string
	for n := range c.missing {
		names = append(names, c.names.of(n))
	}
	sort.Strings(names)
	shown := names[:min(len(names), 8)]
	more := ""
	if len(names) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(names)-len(shown))
	}
	c.warn(fmt.Sprintf("warning: %s lacks %d tensors, converted with defaults (norm gains 1, biases 0, LM head = embeddings) because of --allow-missing-weights: %s%s",
		c.ckpt.Dir, len(names), strings.Join(shown, ", "), more))
	return nil
}

// defaultFP16 returns the default value of a missing tensor in r's layout.
func (c *Converter) defaultFP16(r tensorRef) []uint16 {
	n := int64(1)
	for _, d := range r.Shape {
		n *= d
	}
	v, _ := c.defaultable(r.Name)
	if r.PlusOne {
		v++
	}
	out := make([]uint16, n)
	h := uint16(fp16.FromFloat32(v))
	for i := range out {
		out[i] = h
	}
	return out
}
