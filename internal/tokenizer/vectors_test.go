package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

var (
	loadMu    sync.Mutex
	loadCache = map[string]*Tokenizer{}
)

// loadTestdata loads testdata/<name> once per test binary.
func loadTestdata(t testing.TB, name string) *Tokenizer {
	t.Helper()
	loadMu.Lock()
	defer loadMu.Unlock()
	if tk, ok := loadCache[name]; ok {
		return tk
	}
	tk, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	loadCache[name] = tk
	return tk
}

type vectorsFile struct {
	Texts []string           `json:"texts"`
	IDs   map[string][][]int `json:"ids"`
}

func readVectors(t *testing.T) vectorsFile { return readVectorsFile(t) }

func readVectorsFile(t testing.TB) vectorsFile {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorsFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVectors reproduces every id list of vectors.json (add_special_tokens
// false) and decodes each back to its text.
func TestVectors(t *testing.T) {
	v := readVectors(t)
	for _, family := range []string{"llama3", "qwen3", "mistral", "gemma3"} {
		t.Run(family, func(t *testing.T) {
			tk := loadTestdata(t, family)
			want := v.IDs[family]
			if len(want) != len(v.Texts) || len(want) != 122 {
				t.Fatalf("vectors: %d id lists for %d texts", len(want), len(v.Texts))
			}
			for i, text := range v.Texts {
				got := tk.Encode(text, false)
				if !slices.Equal(got, want[i]) {
					t.Errorf("text %d %q:\n got %v\nwant %v", i, text, got, want[i])
					continue
				}
				if dec := tk.Decode(got, false); dec != text {
					t.Errorf("text %d: Decode = %q, want %q", i, dec, text)
				}
			}
		})
	}
}

// TestConcurrentEncode runs Encode from several goroutines on a fresh
// tokenizer (empty word cache) and compares with sequential results.
func TestConcurrentEncode(t *testing.T) {
	texts := readVectors(t).Texts
	want := make([][]int, len(texts))
	seq := loadTestdata(t, "tiny")
	for i, s := range texts {
		want[i] = seq.Encode(s, true)
	}
	tk, err := Load("testdata/tiny")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4*len(texts))
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range texts {
				i := (k + g*31) % len(texts)
				if got := tk.Encode(texts[i], true); !slices.Equal(got, want[i]) {
					errs <- texts[i]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("concurrent Encode(%q) differs", s)
	}
}
