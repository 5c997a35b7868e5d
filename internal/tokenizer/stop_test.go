package tokenizer

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readFamilyFiles reads testdata/<family>'s real tokenizer.json (or .gz)
// and tokenizer_config.json.
func readFamilyFiles(t *testing.T, family string) Files {
	t.Helper()
	dir := filepath.Join("testdata", family)
	tj, err := os.ReadFile(filepath.Join(dir, TokenizerFile))
	if os.IsNotExist(err) {
		f, ferr := os.Open(filepath.Join(dir, TokenizerFile+".gz"))
		if ferr != nil {
			t.Fatal(ferr)
		}
		defer f.Close()
		zr, zerr := gzip.NewReader(f)
		if zerr != nil {
			t.Fatal(zerr)
		}
		tj, err = io.ReadAll(zr)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, TokenizerConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	return Files{Tokenizer: tj, TokenizerConfig: cfg}
}

// TestStopIDs checks the stop rule on the real tokenizer files of each
// family, with and without the generation_config.json and config.json a
// checkpoint carries. The shared tokenizer set has no generation configs,
// so their eos_token_id values are typed in from the public checkpoints
// named in each case; the tiny model's files are the bundled ones.
func TestStopIDs(t *testing.T) {
	tests := []struct {
		name, family string
		gen, cfg     string // file contents; "" = absent
		want         []int
	}{
		// Qwen/Qwen3-0.6B: generation_config lists <|im_end|> and
		// <|endoftext|>; config.json has <|im_end|> only.
		{"qwen3 checkpoint", "qwen3", `{"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643}`, `{"eos_token_id": 151645}`, []int{151645, 151643}},
		{"qwen3 tokenizer only", "qwen3", "", "", []int{151645, 151643}},
		// A base checkpoint's generation_config (one id) comes first.
		{"qwen3 base generation_config", "qwen3", `{"eos_token_id": 151643}`, "", []int{151643, 151645}},
		// google/gemma-3-1b-it: both files list <eos> and <end_of_turn>.
		{"gemma3 checkpoint", "gemma3", `{"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}`, `{"eos_token_id": [1, 106]}`, []int{1, 106}},
		// tokenizer_config's eos_token is <end_of_turn>; <eos> still stops.
		{"gemma3 tokenizer only", "gemma3", "", "", []int{106, 1}},
		{"gemma3 base config", "gemma3", "", `{"eos_token_id": 1}`, []int{1, 106}},
		// Multimodal layout: the id sits under text_config.
		{"gemma3 nested config", "gemma3", "", `{"text_config": {"eos_token_id": [1]}}`, []int{1, 106}},
		// meta-llama/Llama-3.2-1B-Instruct lists three ids.
		{"llama3 checkpoint", "llama3", `{"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}`, `{"eos_token_id": [128001, 128008, 128009]}`, []int{128001, 128008, 128009}},
		{"llama3 tokenizer only", "llama3", "", "", []int{128001, 128009}},
		{"mistral tokenizer only", "mistral", "", "", []int{2}},
	}
	// tokenizer.json is parsed once per family; each case then applies its
	// config files to a copy, as parseFiles does after parsing.
	parsed := map[string]*Tokenizer{}
	configs := map[string][]byte{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, ok := parsed[tc.family]
			if !ok {
				files := readFamilyFiles(t, tc.family)
				var err error
				if base, err = parseTokenizerJSON(files.Tokenizer); err != nil {
					t.Fatal(err)
				}
				parsed[tc.family], configs[tc.family] = base, files.TokenizerConfig
			}
			tk := *base
			err := tk.applyConfigs(Files{
				TokenizerConfig:  configs[tc.family],
				GenerationConfig: []byte(tc.gen),
				ModelConfig:      []byte(tc.cfg),
			})
			if err != nil {
				t.Fatal(err)
			}
			checkStop(t, &tk, tc.want)
		})
	}
	t.Run("tiny bundled model", func(t *testing.T) {
		// testdata/tiny holds the model's own tokenizer_config.json,
		// generation_config.json and config.json (all name id 1017).
		tk := loadTestdata(t, "tiny")
		checkStop(t, tk, []int{1017})
	})
}

func checkStop(t *testing.T, tk *Tokenizer, want []int) {
	t.Helper()
	if got := tk.EOS(); !slices.Equal(got, want) {
		t.Errorf("EOS() = %v, want %v", got, want)
	}
	for _, id := range want {
		if !tk.IsEOS(id) {
			t.Errorf("IsEOS(%d) = false", id)
		}
	}
	if tk.IsEOS(tk.Encode("a", false)[0]) {
		t.Error(`IsEOS(id of "a") = true`)
	}
}

// TestStopIDsErrors checks that a bad eos_token_id is one error naming the
// file and the key.
func TestStopIDsErrors(t *testing.T) {
	tj, err := os.ReadFile("testdata/tiny/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		gen, cfg string
		wantErr  string
	}{
		{"generation_config string", `{"eos_token_id": "x"}`, "", "generation_config.json: eos_token_id: want an integer or a list of integers"},
		{"generation_config negative", `{"eos_token_id": [2, -1]}`, "", "generation_config.json: eos_token_id: id -1 is negative"},
		{"config list of strings", "", `{"eos_token_id": ["a"]}`, "config.json: eos_token_id: want an integer or a list of integers"},
		{"config nested bad", "", `{"text_config": {"eos_token_id": 1.5}}`, "config.json: text_config.eos_token_id: want an integer"},
		{"config not JSON", "", `{`, "config.json: decode JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(Files{Tokenizer: tj, GenerationConfig: []byte(tc.gen), ModelConfig: []byte(tc.cfg)})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
