// Package arch holds what every model architecture's converter shares: the
// names of the ANEMLL model parts, their file names, and how decoder layers
// are split into chunks.
package arch

import (
	"fmt"
	"strings"
)

// Part is one of the Core ML models ANEMLL splits an LLM into.
type Part string

// The parts, named as in ANEMLL's file names.
const (
	// PartEmbeddings is part 1: token ids to hidden states.
	PartEmbeddings Part = "embeddings"
	// PartFFN is part 2: decoder layers for one token (function "main",
	// or "infer" in a combined package).
	PartFFN Part = "FFN"
	// PartPrefill is part 2_prefill: decoder layers for a batch of tokens.
	PartPrefill Part = "prefill"
	// PartLMHead is part 3: hidden state to logits.
	PartLMHead Part = "lm_head"
	// PartFFNPF is a combined multifunction package holding the FFN
	// ("infer") and prefill ("prefill") functions of one chunk.
	PartFFNPF Part = "FFN_PF"
	// PartMonolithic is ANEMLL's monolithic model for one token:
	// input_ids through embeddings, every decoder layer and the LM head.
	PartMonolithic Part = "monolithic"
	// PartMonolithicPrefill is the monolithic model for a prefill batch.
	PartMonolithicPrefill Part = "monolithic_prefill"
	// PartMonolithicFull combines both ("infer" and "prefill").
	PartMonolithicFull Part = "monolithic_full"
)

// MonolithicParts lists the monolithic parts in conversion order.
var MonolithicParts = []Part{PartMonolithic, PartMonolithicPrefill, PartMonolithicFull}

// Monolithic reports whether p is one of the monolithic parts.
func (p Part) Monolithic() bool {
	return p == PartMonolithic || p == PartMonolithicPrefill || p == PartMonolithicFull
}

// Parts lists every part in conversion order.
var Parts = []Part{PartEmbeddings, PartFFN, PartPrefill, PartLMHead, PartFFNPF}

// Chunked reports whether the part is split into chunks of layers.
func (p Part) Chunked() bool { return p == PartFFN || p == PartPrefill || p == PartFFNPF }

// ParsePart accepts a part name (as in Parts, case-insensitive) or one of
// ANEMLL's --part codes: "1", "2", "2_prefill", "3".
func ParsePart(s string) (Part, error) {
	switch strings.ToLower(s) {
	case "1", "embeddings":
		return PartEmbeddings, nil
	case "2", "ffn":
		return PartFFN, nil
	case "2_prefill", "prefill":
		return PartPrefill, nil
	case "3", "lm_head":
		return PartLMHead, nil
	case "ffn_pf", "combined":
		return PartFFNPF, nil
	case "monolithic":
		return PartMonolithic, nil
	case "monolithic_prefill":
		return PartMonolithicPrefill, nil
	}
	return "", fmt.Errorf("arch: unknown part %q (want 1, 2, 2_prefill, 3, monolithic, monolithic_prefill, embeddings, FFN, prefill, lm_head or FFN_PF)", s)
}

// PackageExt is the extension of a Core ML package directory.
const PackageExt = ".mlpackage"

// FileStem returns ANEMLL's file name of a part without extension:
// {prefix}_embeddings[_lut{N}], {prefix}_lm_head[_lut{N}], or for chunked
// parts {prefix}_{FFN|prefill|FFN_PF}[_lut{N}]_chunk_{i:02d}of{n:02d}, where
// i = chunk+1 (chunk counts from 0). lutBits 0 means no LUT suffix.
func FileStem(prefix string, p Part, lutBits, chunk, numChunks int) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("arch: empty file name prefix")
	}
	if lutBits < 0 {
		return "", fmt.Errorf("arch: negative LUT bits %d", lutBits)
	}
	var sb strings.Builder
	sb.WriteString(prefix)
	sb.WriteByte('_')
	switch p {
	case PartEmbeddings, PartLMHead, PartFFN, PartPrefill, PartFFNPF,
		PartMonolithic, PartMonolithicPrefill, PartMonolithicFull:
		sb.WriteString(string(p))
	default:
		return "", fmt.Errorf("arch: unknown part %q", p)
	}
	if lutBits > 0 {
		fmt.Fprintf(&sb, "_lut%d", lutBits)
	}
	if p.Chunked() {
		if numChunks < 1 || chunk < 0 || chunk >= numChunks {
			return "", fmt.Errorf("arch: chunk %d of %d is out of range", chunk, numChunks)
		}
		fmt.Fprintf(&sb, "_chunk_%02dof%02d", chunk+1, numChunks)
	}
	return sb.String(), nil
}

// FileName returns FileStem plus ".mlpackage".
func FileName(prefix string, p Part, lutBits, chunk, numChunks int) (string, error) {
	s, err := FileStem(prefix, p, lutBits, chunk, numChunks)
	if err != nil {
		return "", err
	}
	return s + PackageExt, nil
}

// Range is a half-open range of decoder layers [Start, End).
type Range struct{ Start, End int }

// Len returns the number of layers in r.
func (r Range) Len() int { return r.End - r.Start }

// SplitLayers assigns layers 0..layers-1 to chunks so that every layer is in
// exactly one chunk and chunk sizes differ by at most one; the first
// layers%chunks chunks get the extra layer (5 layers in 2 chunks: 3+2).
// ANEMLL uses layers/chunks per chunk and silently drops the remainder.
func SplitLayers(layers, chunks int) ([]Range, error) {
	if layers < 1 {
		return nil, fmt.Errorf("arch: cannot split %d layers", layers)
	}
	if chunks < 1 || chunks > layers {
		return nil, fmt.Errorf("arch: chunk count %d must be between 1 and the layer count %d", chunks, layers)
	}
	out := make([]Range, chunks)
	base, extra := layers/chunks, layers%chunks
	start := 0
	for i := range out {
		n := base
		if i < extra {
			n++
		}
		out[i] = Range{start, start + n}
		start += n
	}
	return out, nil
}
