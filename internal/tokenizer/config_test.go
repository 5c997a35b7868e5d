package tokenizer

import (
	"os"
	"slices"
	"testing"
)

func TestConfigFiles(t *testing.T) {
	tj, err := os.ReadFile("testdata/tiny/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		files     Files
		bos       int
		hasBOS    bool
		eos       []int
		encodeHi  []int // Encode("Hi", true); "Hi" alone is [72, 105]
		template  string
		renderOut string
	}{
		{
			// <|end_of_text|> is a special token: it stops generation
			// even when no config file names it.
			name:     "tokenizer.json only",
			files:    Files{Tokenizer: tj},
			eos:      []int{1017},
			encodeHi: []int{1016, 72, 105},
		},
		{
			name:  "add_bos_token false overrides the post-processor",
			files: Files{Tokenizer: tj, TokenizerConfig: []byte(`{"bos_token":"<|begin_of_text|>","eos_token":"<|end_of_text|>","add_bos_token":false,"add_eos_token":true}`)},
			bos:   1016, hasBOS: true, eos: []int{1017},
			encodeHi: []int{72, 105, 1017},
		},
		{
			name: "generation_config list then tokenizer eos",
			files: Files{Tokenizer: tj,
				TokenizerConfig:  []byte(`{"eos_token":{"content":"<|end_of_text|>","__type":"AddedToken"}}`),
				GenerationConfig: []byte(`{"bos_token_id":1016,"eos_token_id":[1018]}`)},
			bos: 1016, hasBOS: true, eos: []int{1018, 1017},
			encodeHi: []int{1016, 72, 105},
		},
		{
			name: "special_tokens_map fallback",
			files: Files{Tokenizer: tj,
				SpecialTokensMap: []byte(`{"bos_token":{"content":"<|begin_of_text|>"},"eos_token":"<|pad|>"}`),
				GenerationConfig: []byte(`{"eos_token_id":1017}`)},
			bos: 1016, hasBOS: true, eos: []int{1017, 1018},
			encodeHi: []int{1016, 72, 105},
		},
		{
			name: "chat_template list and jinja file",
			files: Files{Tokenizer: tj,
				TokenizerConfig: []byte(`{"chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D{{ messages[0].content }}"}]}`),
				ChatTemplate:    []byte("ignored")},
			eos:      []int{1017},
			encodeHi: []int{1016, 72, 105},
			template: "D{{ messages[0].content }}", renderOut: "Dx",
		},
		{
			name:     "chat_template.jinja when the config has none",
			files:    Files{Tokenizer: tj, TokenizerConfig: []byte(`{}`), ChatTemplate: []byte("J{{ add_generation_prompt }}")},
			eos:      []int{1017},
			encodeHi: []int{1016, 72, 105},
			template: "J{{ add_generation_prompt }}", renderOut: "JTrue",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := Parse(tc.files)
			if err != nil {
				t.Fatal(err)
			}
			if bos, ok := tk.BOS(); bos != tc.bos || ok != tc.hasBOS {
				t.Errorf("BOS() = %d, %v; want %d, %v", bos, ok, tc.bos, tc.hasBOS)
			}
			if got := tk.EOS(); !slices.Equal(got, tc.eos) {
				t.Errorf("EOS() = %v, want %v", got, tc.eos)
			}
			if got := tk.Encode("Hi", true); !slices.Equal(got, tc.encodeHi) {
				t.Errorf("Encode(Hi, true) = %v, want %v", got, tc.encodeHi)
			}
			if got := tk.ChatTemplate(); got != tc.template {
				t.Errorf("ChatTemplate() = %q, want %q", got, tc.template)
			}
			if tc.template != "" {
				out, err := tk.ApplyChatTemplate([]Message{{"user", "x"}}, true)
				if err != nil || out != tc.renderOut {
					t.Errorf("ApplyChatTemplate = %q, %v; want %q", out, err, tc.renderOut)
				}
			}
		})
	}
}

// TestLoadGzip checks that Load reads tokenizer.json.gz and that a corrupt
// one is an error naming it.
func TestLoadGzip(t *testing.T) {
	dir := writeTokenizerDir(t, map[string]string{"tokenizer.json.gz": "not gzip"})
	if _, err := Load(dir); err == nil {
		t.Fatal("Load with corrupt tokenizer.json.gz succeeded")
	}
	tk := loadTestdata(t, "llama3") // testdata/llama3 holds only tokenizer.json.gz
	if got := tk.VocabSize(); got != 128256 {
		t.Errorf("VocabSize = %d", got)
	}
}
