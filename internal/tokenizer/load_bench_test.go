package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoad loads each testdata tokenizer as stored (llama3, qwen3 and
// gemma3 from tokenizer.json.gz, so gunzip is included).
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

// BenchmarkLoadRaw loads the large tokenizers from an uncompressed
// tokenizer.json, as Load reads a real checkpoint (Gemma 3: 33 MB, 262,145
// ids, 514,906 merges).
func BenchmarkLoadRaw(b *testing.B) {
	for _, name := range []string{"llama3", "qwen3", "gemma3"} {
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			tj, err := readMaybeGzip(filepath.Join("testdata", name, TokenizerFile))
			if err != nil {
				b.Fatal(err)
			}
			cfg, err := os.ReadFile(filepath.Join("testdata", name, TokenizerConfigFile))
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, TokenizerFile), tj, 0o644); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, TokenizerConfigFile), cfg, 0o644); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tj)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := Load(dir); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
