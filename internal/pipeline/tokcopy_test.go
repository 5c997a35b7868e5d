package pipeline

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/tokenizer"
)

// TestCopyTokenizer copies the bundled tiny model's tokenizer files plus a
// generation_config.json that lists an extra stop id, a chat_template.jinja
// and a weight file, and checks that the output directory holds exactly
// the tokenizer files and that a tokenizer loaded from it stops on every
// id the checkpoint names.
func TestCopyTokenizer(t *testing.T) {
	srcModel := filepath.Join("..", "..", "testdata", "tiny-llama-fortunes", "bf16")
	src, dst := t.TempDir(), t.TempDir()
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "config.json"} {
		b, err := os.ReadFile(filepath.Join(srcModel, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	extra := map[string]string{
		"generation_config.json": `{"bos_token_id": 1016, "eos_token_id": [1018, 1017]}`,
		"chat_template.jinja":    "{% for m in messages %}{{ m.content }}{% endfor %}",
		"model.safetensors":      "not copied",
	}
	for name, body := range extra {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copied, err := copyTokenizer(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "config.json"}
	if !slices.Equal(copied, want) {
		t.Errorf("copied %v, want %v", copied, want)
	}
	entries, err := os.ReadDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	sorted := slices.Sorted(slices.Values(want))
	if !slices.Equal(names, sorted) {
		t.Errorf("output holds %v, want %v", names, sorted)
	}
	for _, name := range want {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, _ := os.ReadFile(filepath.Join(dst, name))
		if string(a) != string(b) {
			t.Errorf("%s differs after the copy", name)
		}
	}
	tk, err := tokenizer.Load(dst)
	if err != nil {
		t.Fatal(err)
	}
	// generation_config's ids first, then config.json's and
	// tokenizer_config's (1017, already listed).
	if got := tk.EOS(); !slices.Equal(got, []int{1018, 1017}) {
		t.Errorf("EOS() from the copied files = %v, want [1018 1017]", got)
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := copyTokenizer(empty, t.TempDir()); err == nil || !strings.Contains(err.Error(), "no tokenizer.json") {
		t.Errorf("copy without tokenizer.json: err = %v, want one naming tokenizer.json", err)
	}
}
