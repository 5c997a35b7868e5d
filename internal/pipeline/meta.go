package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	// CalibrationTokens and CalibrationSHA256 record a calibrated
	// conversion (tokens used, SHA-256 of the text); not written when 0.
	CalibrationTokens int
	CalibrationSHA256 string
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
	fmt.Fprintf(&b, "    lut_ffn: %s\n", lutString(m.LUTFFN))
	fmt.Fprintf(&b, "    lut_lmhead: %s\n", lutString(m.LUTLMHead))
	fmt.Fprintf(&b, "    num_chunks: %d\n", m.NumChunks)
	fmt.Fprintf(&b, "    model_prefix: %s\n", m.Prefix)
	fmt.Fprintf(&b, "    embeddings: %s_embeddings%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTEmbeddings))
	fmt.Fprintf(&b, "    lm_head: %s_lm_head%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTLMHead))
	fmt.Fprintf(&b, "    ffn: %s_FFN_PF%s.mlmodelc\n", m.Prefix, lutSuffix(m.LUTFFN))
	fmt.Fprintf(&b, "    split_lm_head: %d\n", m.SplitLMHead)
	if m.CalibrationTokens > 0 {
		fmt.Fprintf(&b, "    calibration_tokens: %d\n", m.CalibrationTokens)
		fmt.Fprintf(&b, "    calibration_sha256: %s\n", m.CalibrationSHA256)
	}
	return []byte(b.String())
}

// TokenizerFiles are copied from the checkpoint to the output when present.
var TokenizerFiles = []string{
	"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
	"special_tokens_map.json", "added_tokens.json", "tokenizer.model",
	"generation_config.json", "config.json",
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
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-")
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
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
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("pipeline: write %s: %w", name, err)
	}
	return nil
}
