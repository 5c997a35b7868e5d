package tokenizer

import (
	"path/filepath"
	"testing"
)

func BenchmarkLoad(b *testing.B) {
	for _, name := range []string{"llama3", "qwen3", "mistral", "gemma3", "tiny"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Load(filepath.Join("testdata", name)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
