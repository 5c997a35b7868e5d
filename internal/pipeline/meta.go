package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/tempdir"
)

// MetaInfo is what meta.yaml records: the keys ANEMLL's
// generate_meta_yaml.py writes, read by its chat.py and Swift runners.
type MetaInfo struct {
	ModelName     string
	Version       string
	Architecture  string
	ContextLength int
	BatchSize     int
	// LUT widths; 0 is written as "none".
	LUTEmbeddings, LUTFFN, LUTLMHead int
	NumChunks                        int
	Prefix                           string
	// SplitLMHead is the number of logits outputs of the LM head.
	SplitLMHead int
	// Argmax records an in-model argmax head (argmax_in_model: true).
	Argmax bool
	// Monolithic writes convert_monolith.sh's meta.yaml instead.
	Monolithic bool
	// VocabSize and LMHeadChunkSizes let runners map a split-local argmax
	// index to a token id (ANEMLL 0.3.5 writes both).
	VocabSize        int
	LMHeadChunkSizes []int
	// PerChannel holds the LUT group sizes given as --lutN bits,group
	// (0: not given, so no *_per_channel key; decoder.PerTensor is
	// written as 0, ANEMLL's spelling of one table per tensor).
	PerChannel decoder.LUTGroups
	// SlidingWindow, when positive, is the model's attention window; the
	// packages keep one unified KV cache and apply it inside the graph, so
	// meta.yaml also says single_cache (no rotate functions).
	SlidingWindow int
	// CalibrationTokens and CalibrationSHA256 record a calibrated
	// conversion (tokens used, SHA-256 of the text); not written when 0.
	CalibrationTokens int
	CalibrationSHA256 string
}

// perChannel renders a *_per_channel line, or nothing when g is 0 or the
// part has no LUT.
func perChannel(key string, g, bits int) string {
	if g == 0 || bits == 0 {
		return ""
	}
	if g == decoder.PerTensor {
		g = 0
	}
	return fmt.Sprintf("    %s: %d\n", key, g)
}

// tail writes the keys ANEMLL 0.3.5 puts after split_lm_head.
func (m MetaInfo) tail(b *strings.Builder) {
	if m.Argmax {
		fmt.Fprintf(b, "    argmax_in_model: true\n")
	}
	if m.VocabSize > 0 {
		fmt.Fprintf(b, "    vocab_size: %d\n", m.VocabSize)
	}
	if len(m.LMHeadChunkSizes) > 0 {
		parts := make([]string, len(m.LMHeadChunkSizes))
		for i, n := range m.LMHeadChunkSizes {
			parts[i] = strconv.Itoa(n)
		}
		fmt.Fprintf(b, "    lm_head_chunk_sizes: [%s]\n", strings.Join(parts, ", "))
	}
	if m.SlidingWindow > 0 {
		fmt.Fprintf(b, "    sliding_window: %d\n", m.SlidingWindow)
	}
	// Our prefill writes its K/V at current_pos (a dynamic slice), so
	// ANEMLL 0.3.5's chat.py may prefill in batches.
	fmt.Fprintf(b, "    prefill_dynamic_slice: true\n")
	if m.SlidingWindow > 0 {
		fmt.Fprintf(b, "    single_cache: true\n")
	}
	if m.CalibrationTokens > 0 {
		fmt.Fprintf(b, "    calibration_tokens: %d\n", m.CalibrationTokens)
		fmt.Fprintf(b, "    calibration_sha256: %s\n", m.CalibrationSHA256)
	}
}

func lutString(bits int) string {
	if bits == 0 {
		return "none"
	}
	return strconv.Itoa(bits)
}

func lutSuffix(bits int) string {
	if bits == 0 {
		return ""
	}
	return "_lut" + strconv.Itoa(bits)
}

// Marshal renders meta.yaml exactly in the layout ANEMLL writes (its
// runners look for model_info.parameters.*). Model file names end in
// .mlmodelc and the FFN entry has no chunk suffix: runners append
// _chunk_XXofYY themselves.
func (m MetaInfo) Marshal() []byte {
	if m.Monolithic {
		return m.marshalMonolithic()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "model_info:\n")
	fmt.Fprintf(&b, "  name: anemll-%s-ctx%d\n", m.ModelName, m.ContextLength)
	fmt.Fprintf(&b, "  version: %s\n", m.Version)
	fmt.Fprintf(&b, "  description: |\n")
	fmt.Fprintf(&b, "    Runs %s on the Apple Neural Engine (converted by anemll-go)\n", m.ModelName)
	fmt.Fprintf(&b, "    Context length: %d\n", m.ContextLength)
	fmt.Fprintf(&b, "    Batch size: %d\n", m.BatchSize)
	fmt.Fprintf(&b, "    Chunks: %d\n", m.NumChunks)
	fmt.Fprintf(&b, "  license: MIT\n")
	fmt.Fprintf(&b, "  author: Anemll\n")
	fmt.Fprintf(&b, "  framework: Core ML\n")
	fmt.Fprintf(&b, "  language: Go\n")
	fmt.Fprintf(&b, "  architecture: %s\n", m.Architecture)
	fmt.Fprintf(&b, "  parameters:\n")
	fmt.Fprintf(&b, "    context_length: %d\n", m.ContextLength)
	fmt.Fprintf(&b, "    batch_size: %d\n", m.BatchSize)
	fmt.Fprintf(&b, "    lut_embeddings: %s\n", lutString(m.LUTEmbeddings))
	b.WriteString(perChannel("lut_embeddings_per_channel", m.PerChannel.Embeddings, m.LUTEmbeddings))
	fmt.Fprintf(&b, "    lut_ffn: %s\n", lutString(m.LUTFFN))
	b.WriteString(perChannel("lut_ffn_per_channel", m.PerChannel.FFN, m.LUTFFN))
	fmt.Fprintf(&b, "    lut_lmhead: %s\n", lutString(m.LUTLMHead))
	b.WriteString(perChannel("lut_lmhead_per_channel", m.PerChannel.LMHead, m.LUTLMHead))
	fmt.Fprintf(&b, "    num_chunks: %d\n", m.NumChunks)
	fmt.Fprintf(&b, "    model_prefix: %s\n", m.Prefix)
	fmt.Fprintf(&b, "    embeddings: %s_embeddings%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTEmbeddings))
	fmt.Fprintf(&b, "    lm_head: %s_lm_head%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTLMHead))
	fmt.Fprintf(&b, "    ffn: %s_FFN_PF%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTFFN))
	fmt.Fprintf(&b, "    split_lm_head: %d\n", m.SplitLMHead)
	m.tail(&b)
	return []byte(b.String())
}

// marshalMonolithic renders convert_monolith.sh's meta.yaml: model_type
// monolithic, one lut_bits (the FFN's; embeddings and LM head listed only
// when they differ), the monolithic_model file and its functions.
func (m MetaInfo) marshalMonolithic() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "model_info:\n")
	fmt.Fprintf(&b, "  name: anemll-%s-ctx%d-monolithic\n", m.ModelName, m.ContextLength)
	fmt.Fprintf(&b, "  version: %s\n", m.Version)
	fmt.Fprintf(&b, "  description: |\n")
	fmt.Fprintf(&b, "    Monolithic model running %s on the Apple Neural Engine (converted by anemll-go)\n", m.ModelName)
	fmt.Fprintf(&b, "    Context length: %d\n", m.ContextLength)
	fmt.Fprintf(&b, "    Batch size: %d\n", m.BatchSize)
	fmt.Fprintf(&b, "    Type: Monolithic (single file with embed+FFN+lm_head)\n")
	fmt.Fprintf(&b, "  license: MIT\n")
	fmt.Fprintf(&b, "  author: Anemll\n")
	fmt.Fprintf(&b, "  framework: Core ML\n")
	fmt.Fprintf(&b, "  language: Go\n")
	fmt.Fprintf(&b, "  architecture: %s\n", m.Architecture)
	fmt.Fprintf(&b, "  model_type: monolithic\n")
	fmt.Fprintf(&b, "  parameters:\n")
	fmt.Fprintf(&b, "    context_length: %d\n", m.ContextLength)
	fmt.Fprintf(&b, "    batch_size: %d\n", m.BatchSize)
	fmt.Fprintf(&b, "    lut_bits: %s\n", lutString(m.LUTFFN))
	b.WriteString(perChannel("lut_per_channel", m.PerChannel.FFN, m.LUTFFN))
	if m.LUTEmbeddings != m.LUTFFN {
		fmt.Fprintf(&b, "    lut_embeddings: %s\n", lutString(m.LUTEmbeddings))
		b.WriteString(perChannel("lut_embeddings_per_channel", m.PerChannel.Embeddings, m.LUTEmbeddings))
	}
	if m.LUTLMHead != m.LUTFFN {
		fmt.Fprintf(&b, "    lut_lmhead: %s\n", lutString(m.LUTLMHead))
		b.WriteString(perChannel("lut_lmhead_per_channel", m.PerChannel.LMHead, m.LUTLMHead))
	}
	fmt.Fprintf(&b, "    model_prefix: %s\n", m.Prefix)
	fmt.Fprintf(&b, "    monolithic_model: %s_monolithic_full%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTFFN))
	fmt.Fprintf(&b, "    split_lm_head: %d\n", m.SplitLMHead)
	m.tail(&b)
	fmt.Fprintf(&b, "    functions:\n      - infer\n      - prefill\n")
	return []byte(b.String())
}

// TokenizerFiles are copied from the checkpoint to the output when present:
// the tokenizer itself, chat_template.jinja (newer checkpoints keep the chat
// template there instead of in tokenizer_config.json), and
// generation_config.json and config.json, whose eos_token_id lists are part
// of the rule for when chat stops (tokenizer.Tokenizer.EOS).
var TokenizerFiles = []string{
	"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
	"special_tokens_map.json", "added_tokens.json", "tokenizer.model",
	"chat_template.jinja", "generation_config.json", "config.json",
}

// copyTokenizer copies the tokenizer (and config) files present in src to
// dst, each atomically. It fails if tokenizer.json and tokenizer.model are
// both missing, since no runner could then tokenize.
func copyTokenizer(src, dst string) ([]string, error) {
	var copied []string
	for _, name := range TokenizerFiles {
		b, err := os.ReadFile(filepath.Join(src, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(dst, name), b); err != nil {
			return nil, err
		}
		copied = append(copied, name)
	}
	for _, c := range copied {
		if c == "tokenizer.json" || c == "tokenizer.model" {
			return copied, nil
		}
	}
	return copied, fmt.Errorf("pipeline: %s has no tokenizer.json (or tokenizer.model): runners need one; add it to the checkpoint directory", src)
}

// writeFileAtomic writes b to name through a temporary file and a rename.
func writeFileAtomic(name string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), tempdir.Pattern(name))
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	forget := tempdir.Track(f.Name())
	defer forget()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = tempdir.Publish(func() error { return os.Rename(f.Name(), name) })
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("pipeline: write %s: %w", name, err)
	}
	return nil
}
