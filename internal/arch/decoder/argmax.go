package decoder

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
)

// Output names of an LM head converted with Options.Argmax, as ANEMLL 0.3.5
// names them.
const (
	ArgmaxIndexOutput = "argmax_idx"
	ArgmaxValueOutput = "argmax_val"
)

// argmaxOutputs turns the LM head's K split logits [1,1,P] into ANEMLL
// 0.3.5's in-model argmax outputs: argmax_idx int32 [K], the index of the
// largest logit inside each split (split-local, the first on ties), and
// argmax_val fp16 [K], that logit. A runner takes the split with the
// largest value and adds the split's offset.
func (f *fn) argmaxOutputs(logits []*mil.Var) ([]*mil.Var, []coreml.Feature) {
	K := len(logits)
	idx := make([]*mil.Var, K)
	val := make([]*mil.Var, K)
	for i, l := range logits {
		p := fmt.Sprintf("lm_head_argmax_%d", i+1)
		idx[i] = f.op("reduce_argmax", p, mil.In{"x": l, "axis": -1, "keep_dims": true, "output_dtype": "int32"})
		val[i] = f.op("gather_along_axis", p+"_val", mil.In{"x": l, "indices": idx[i], "axis": -1, "validate_indices": false})
	}
	join := func(parts []*mil.Var, pfx, out string) *mil.Var {
		x := parts[0]
		if K > 1 {
			x = f.op("concat", pfx+"_cat", mil.In{"values": parts, "axis": -1, "interleave": false})
		}
		return f.b.Op("reshape", out, mil.In{"x": x, "shape": []int{K}})
	}
	outs := []*mil.Var{
		join(idx, "lm_head_argmax_idx", ArgmaxIndexOutput),
		join(val, "lm_head_argmax_val", ArgmaxValueOutput),
	}
	return outs, []coreml.Feature{
		coreml.ArrayFeature(ArgmaxIndexOutput, mil.Int32, int64(K)),
		coreml.ArrayFeature(ArgmaxValueOutput, mil.Float16, int64(K)),
	}
}

// LMHeadChunkSizes returns the number of vocabulary rows each LM-head
// split holds, in order (the real rows: a padded last split counts only
// its tokens). Offsets are the running sums, which is how ANEMLL's runners
// map a split-local argmax index to a token id.
func (c *Converter) LMHeadChunkSizes() []int {
	K, P, V := c.opts.SplitLMHead, c.lmPartRows(), c.cfg.VocabSize
	out := make([]int, K)
	for i := range out {
		out[i] = min(P, V-i*P)
	}
	return out
}

// argmaxMeta is the package metadata ANEMLL 0.3.5 writes on an LM head
// with in-model argmax.
func (c *Converter) argmaxMeta() map[string]string {
	sizes := make([]string, 0, c.opts.SplitLMHead)
	for _, s := range c.LMHeadChunkSizes() {
		sizes = append(sizes, strconv.Itoa(s))
	}
	return map[string]string{
		"com.anemll.argmax_in_model":     "true",
		"com.anemll.vocab_size":          strconv.Itoa(c.cfg.VocabSize),
		"com.anemll.lm_head_chunk_sizes": strings.Join(sizes, ","),
	}
}
