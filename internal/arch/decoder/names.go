package decoder

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/hf"
)

// tensorNames maps the decoder's canonical tensor names ("model.…" and
// "lm_head.weight", as in LlamaForCausalLM) to one checkpoint's layout.
type tensorNames struct {
	arch.WeightPrefix
}

// of returns the checkpoint name of canonical name n.
func (t tensorNames) of(n string) string {
	if rest, ok := strings.CutPrefix(n, "model."); ok {
		return t.Decoder + rest
	}
	if rest, ok := strings.CutPrefix(n, "lm_head."); ok {
		return t.Head + rest
	}
	return n
}

// findNames picks the family's weight layout that the checkpoint uses:
// the first whose embedding table exists.
func findNames(f *arch.Family, ck *hf.Checkpoint) (tensorNames, error) {
	layouts := f.WeightPrefixes
	if len(layouts) == 0 {
		layouts = []arch.WeightPrefix{{Decoder: "model.", Head: "lm_head."}}
	}
	var tried []string
	for _, l := range layouts {
		name := l.Decoder + "embed_tokens.weight"
		if _, ok := ck.Info(name); ok {
			return tensorNames{l}, nil
		}
		tried = append(tried, strconv.Quote(name))
	}
	return tensorNames{}, fmt.Errorf("decoder: checkpoint %s has no embedding table (looked for %s)", ck.Dir, strings.Join(tried, ", "))
}

// UnusedError reports checkpoint tensors the conversion would drop.
type UnusedError struct {
	Dir   string
	Names []string // sorted
	Hint  string   // the config key that probably explains them, or ""
}

func (e *UnusedError) Error() string {
	shown := e.Names[:min(len(e.Names), 3)]
	more := ""
	if n := len(e.Names) - len(shown); n > 0 {
		more = fmt.Sprintf(" and %d more", n)
	}
	hint := ""
	if e.Hint != "" {
		hint = "; " + e.Hint
	}
	return fmt.Sprintf("decoder: checkpoint %s has %d tensors the conversion would not use (%s%s)%s; fix config.json, or pass --allow-unused-weights to convert without them",
		e.Dir, len(e.Names), strings.Join(shown, ", "), more, hint)
}

// redundantSuffixes are tensors a checkpoint may carry that hold nothing
// the model needs: RoPE inverse-frequency buffers (recomputed from
// rope_theta) saved by older transformers versions.
var redundantSuffixes = []string{"rotary_emb.inv_freq"}

var layerIndex = regexp.MustCompile(`layers\.(\d+)\.`)

// checkUnused lists checkpoint tensors outside used that are not known to
// be redundant, and refuses them unless Options.AllowUnusedWeights (then
// it warns through Options.Warn). Tensors under the family's skipped
// prefixes (a vision tower) are reported once as a note.
func (c *Converter) checkUnused(used map[string]bool) error {
	var unused, skipped []string
	lmHead := c.names.of("lm_head.weight")
	for _, n := range c.ckpt.Names() {
		switch {
		case used[n]:
		case hasAnySuffix(n, redundantSuffixes):
		case hasAnyPrefix(n, c.spec.Family.Skipped):
			skipped = append(skipped, n)
		case n == lmHead && c.cfg.TieWordEmbeddings && c.sameAsEmbeddings(n):
		default:
			unused = append(unused, n)
		}
	}
	if len(skipped) > 0 {
		c.warn(fmt.Sprintf("note: leaving out %d tensors of %s (%s…): only the text decoder is converted", len(skipped), c.ckpt.Dir, skipped[0]))
	}
	if len(unused) == 0 {
		return nil
	}
	sort.Strings(unused)
	err := &UnusedError{Dir: c.ckpt.Dir, Names: unused, Hint: c.unusedHint(unused)}
	if c.opts.AllowUnusedWeights {
		c.warn("warning: " + strings.TrimPrefix(err.Error(), "decoder: ") + " (ignored: --allow-unused-weights)")
		return nil
	}
	return err
}

func (c *Converter) warn(msg string) {
	if c.opts.Warn != nil {
		c.opts.Warn(msg)
	}
}

// unusedHint names the config key that most likely explains the first
// unused tensor.
func (c *Converter) unusedHint(names []string) string {
	for _, n := range names {
		if m := layerIndex.FindStringSubmatch(n); m != nil {
			if i, _ := strconv.Atoi(m[1]); i >= c.cfg.NumHiddenLayers {
				return fmt.Sprintf("config.json num_hidden_layers is %d but the checkpoint has layer %d", c.cfg.NumHiddenLayers, i)
			}
		}
		switch {
		case strings.Contains(n, "self_attn.") && strings.HasSuffix(n, "_proj.bias"):
			if c.spec.Biases.QKV && strings.Contains(n, "o_proj") {
				return fmt.Sprintf("%s has no o_proj bias but the checkpoint does", c.spec.Family.Name)
			}
			return "config.json attention_bias is false but the checkpoint has attention biases"
		case strings.Contains(n, "mlp.") && strings.HasSuffix(n, ".bias"):
			return "config.json mlp_bias is false but the checkpoint has MLP biases"
		case strings.HasSuffix(n, "q_norm.weight"), strings.HasSuffix(n, "k_norm.weight"):
			return fmt.Sprintf("the checkpoint has q/k norms, which model_type %q does not use", c.cfg.ModelType)
		case strings.HasSuffix(n, "feedforward_layernorm.weight"):
			return fmt.Sprintf("the checkpoint has feed-forward norms, which model_type %q does not use", c.cfg.ModelType)
		case n == c.names.of("lm_head.weight") && c.cfg.TieWordEmbeddings:
			return "config.json tie_word_embeddings is true but the checkpoint's lm_head.weight differs from the embeddings"
		}
	}
	return ""
}

// sameAsEmbeddings reports whether tensor n holds exactly the embedding
// table (a tied checkpoint that also saved the head).
func (c *Converter) sameAsEmbeddings(n string) bool {
	emb := c.names.of("model.embed_tokens.weight")
	a, okA := c.ckpt.Info(n)
	b, okB := c.ckpt.Info(emb)
	if !okA || !okB || !equalShape(a.Shape, b.Shape) {
		return false
	}
	if a.DType == b.DType {
		x, err1 := c.ckpt.Raw(n)
		y, err2 := c.ckpt.Raw(emb)
		return err1 == nil && err2 == nil && bytes.Equal(x, y)
	}
	x, err1 := c.ckpt.Float32(n)
	y, err2 := c.ckpt.Float32(emb)
	if err1 != nil || err2 != nil || len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func hasAnySuffix(s string, list []string) bool {
	for _, x := range list {
		if strings.HasSuffix(s, x) {
			return true
		}
	}
	return false
}

func hasAnyPrefix(s string, list []string) bool {
	for _, x := range list {
		if strings.HasPrefix(s, x) {
			return true
		}
	}
	return false
}
