package tokenizer

import (
	"strings"
	"testing"
)

// benchText is about 1 MB of fortunes and edge cases from vectors.json.
func benchText(b *testing.B) string {
	b.Helper()
	v := readVectorsFile(b)
	joined := strings.Join(v.Texts, "\n\n")
	var sb strings.Builder
	for sb.Len() < 1<<20 {
		sb.WriteString(joined)
	}
	return sb.String()
}

// BenchmarkEncode measures Encode throughput on a long text; the word cache
// is warm after the first iteration, as in a long-running process.
func BenchmarkEncode(b *testing.B) {
	text := benchText(b)
	for _, name := range []string{"llama3", "qwen3", "mistral", "gemma3", "tiny"} {
		b.Run(name, func(b *testing.B) {
			tk := loadTestdata(b, name)
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				tk.Encode(text, false)
			}
		})
	}
}

// BenchmarkEncodeColdCache measures Encode with the word cache cleared
// before every iteration, so each distinct word runs the BPE merges.
func BenchmarkEncodeColdCache(b *testing.B) {
	text := benchText(b)
	for _, name := range []string{"llama3", "mistral", "gemma3"} {
		b.Run(name, func(b *testing.B) {
			tk := loadTestdata(b, name)
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				tk.model.mu.Lock()
				clear(tk.model.cache)
				tk.model.mu.Unlock()
				tk.Encode(text, false)
			}
		})
	}
}

// BenchmarkDecode measures Decode throughput in bytes of text produced.
func BenchmarkDecode(b *testing.B) {
	text := benchText(b)
	for _, name := range []string{"llama3", "mistral", "gemma3"} {
		b.Run(name, func(b *testing.B) {
			tk := loadTestdata(b, name)
			ids := tk.Encode(text, false)
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				tk.Decode(ids, false)
			}
		})
	}
}

// BenchmarkEncodeShort encodes the vector texts one by one (prompt-sized
// inputs, 0–2 KB); throughput is over their total size.
func BenchmarkEncodeShort(b *testing.B) {
	texts := readVectorsFile(b).Texts
	total := 0
	for _, s := range texts {
		total += len(s)
	}
	for _, name := range []string{"llama3", "qwen3", "mistral", "gemma3", "tiny"} {
		b.Run(name, func(b *testing.B) {
			tk := loadTestdata(b, name)
			b.SetBytes(int64(total))
			for b.Loop() {
				for _, s := range texts {
					tk.Encode(s, false)
				}
			}
		})
	}
}
