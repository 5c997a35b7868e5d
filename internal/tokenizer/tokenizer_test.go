package tokenizer

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTinyVectors reproduces tokenizer_vectors.json of the tiny trained
// model: ids with BOS, ids without, token strings and the decoded text.
func TestTinyVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/tiny/tokenizer_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Vectors []struct {
			Text         string   `json:"text"`
			AddSpecial   bool     `json:"add_special_tokens"`
			IDs          []int    `json:"ids"`
			IDsNoSpecial []int    `json:"ids_no_special"`
			Tokens       []string `json:"tokens"`
			Decoded      string   `json:"decoded"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) != 3 {
		t.Fatalf("%d vectors, want 3", len(v.Vectors))
	}
	tk := loadTestdata(t, "tiny")
	for i, vec := range v.Vectors {
		got := tk.Encode(vec.Text, vec.AddSpecial)
		if !slices.Equal(got, vec.IDs) {
			t.Errorf("vector %d: Encode = %v, want %v", i, got, vec.IDs)
		}
		if got := tk.Encode(vec.Text, false); !slices.Equal(got, vec.IDsNoSpecial) {
			t.Errorf("vector %d: Encode(no special) = %v, want %v", i, got, vec.IDsNoSpecial)
		}
		var toks []string
		for _, id := range vec.IDs {
			s, _ := tk.Token(id)
			toks = append(toks, s)
		}
		if !slices.Equal(toks, vec.Tokens) {
			t.Errorf("vector %d: tokens = %q, want %q", i, toks, vec.Tokens)
		}
		if got := tk.Decode(vec.IDs, false); got != vec.Decoded {
			t.Errorf("vector %d: Decode = %q, want %q", i, got, vec.Decoded)
		}
		if got := tk.Decode(vec.IDs, true); got != strings.ReplaceAll(vec.Text, "<|end_of_text|>", "") {
			t.Errorf("vector %d: Decode(skip special) = %q", i, got)
		}
	}
}

func TestSpecialIDs(t *testing.T) {
	tests := []struct {
		name      string
		bos       int
		hasBOS    bool
		eos       []int
		vocab     int
		addPrefix []int // what Encode("Hi", true) puts before Encode("Hi", false)
	}{
		// This Llama 3 tokenizer.json has a ByteLevel post-processor, so
		// Encode adds no BOS; its chat template writes <|begin_of_text|>.
		// Without generation_config.json the end-of-turn tokens of the
		// chat formats join tokenizer_config's eos_token (see TestStopIDs).
		{"llama3", 128000, true, []int{128001, 128009}, 128256, nil},
		{"qwen3", 0, false, []int{151645, 151643}, 151669, nil},
		{"gemma3", 2, true, []int{106, 1}, 262145, []int{2}},
		{"mistral", 1, true, []int{2}, 32000, []int{1}},
		{"tiny", 1016, true, []int{1017}, 1019, []int{1016}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk := loadTestdata(t, tc.name)
			bos, ok := tk.BOS()
			if ok != tc.hasBOS || bos != tc.bos {
				t.Errorf("BOS() = %d, %v; want %d, %v", bos, ok, tc.bos, tc.hasBOS)
			}
			if got := tk.EOS(); !slices.Equal(got, tc.eos) {
				t.Errorf("EOS() = %v, want %v", got, tc.eos)
			}
			for _, id := range tc.eos {
				if !tk.IsEOS(id) || !tk.IsSpecial(id) {
					t.Errorf("IsEOS/IsSpecial(%d) false", id)
				}
			}
			if got := tk.VocabSize(); got != tc.vocab {
				t.Errorf("VocabSize() = %d, want %d", got, tc.vocab)
			}
			plain := tk.Encode("Hi", false)
			with := tk.Encode("Hi", true)
			if want := append(slices.Clone(tc.addPrefix), plain...); !slices.Equal(with, want) {
				t.Errorf("Encode(Hi, true) = %v, want %v", with, want)
			}
			for _, id := range []int{0, tc.vocab - 1, tc.eos[0]} {
				s, ok := tk.Token(id)
				if !ok {
					t.Errorf("Token(%d) missing", id)
					continue
				}
				if back, ok := tk.TokenID(s); !ok || back != id {
					t.Errorf("TokenID(Token(%d)=%q) = %d, %v", id, s, back, ok)
				}
			}
			if _, ok := tk.Token(tc.vocab); ok {
				t.Errorf("Token(%d) found past the vocabulary", tc.vocab)
			}
			if _, ok := tk.Token(-1); ok {
				t.Error("Token(-1) found")
			}
		})
	}
}

func TestDecodeSkipSpecial(t *testing.T) {
	tests := []struct {
		tok, text          string
		withSpecial, plain string
	}{
		{"llama3", "<|begin_of_text|>Hi there<|eot_id|>", "<|begin_of_text|>Hi there<|eot_id|>", "Hi there"},
		// <think> is an added token but not special: it survives skipping.
		{"qwen3", "<|im_start|>assistant\n<think>\nok</think><|im_end|>", "<|im_start|>assistant\n<think>\nok</think><|im_end|>", "assistant\n<think>\nok</think>"},
		// SentencePiece decoding: the first ▁ is stripped, <s> is kept
		// verbatim without a space (Strip only removes a leading space).
		{"mistral", "<s>Hello world</s>", "<s> Hello world</s>", "Hello world"},
	}
	for _, tc := range tests {
		tk := loadTestdata(t, tc.tok)
		ids := tk.Encode(tc.text, false)
		if got := tk.Decode(ids, false); got != tc.withSpecial {
			t.Errorf("%s: Decode(%v, false) = %q, want %q", tc.tok, ids, got, tc.withSpecial)
		}
		if got := tk.Decode(ids, true); got != tc.plain {
			t.Errorf("%s: Decode(%v, true) = %q, want %q", tc.tok, ids, got, tc.plain)
		}
	}
	// Out-of-range ids are ignored.
	tk := loadTestdata(t, "tiny")
	if got := tk.Decode([]int{-5, 72, 1 << 30, 470}, false); got != "Hell" {
		t.Errorf("Decode with bad ids = %q, want %q", got, "Hell")
	}
}

func TestStreamDecoder(t *testing.T) {
	v := readVectors(t)
	for _, family := range []string{"llama3", "qwen3", "mistral", "gemma3", "tiny"} {
		tk := loadTestdata(t, family)
		for i, text := range v.Texts {
			ids := tk.Encode(text, false)
			d := tk.NewStreamDecoder(false)
			var sb strings.Builder
			for _, id := range ids {
				piece := d.Add(id)
				if strings.ContainsRune(piece, '\uFFFD') {
					t.Errorf("%s text %d: piece %q holds U+FFFD", family, i, piece)
				}
				sb.WriteString(piece)
			}
			sb.WriteString(d.Flush())
			if want := tk.Decode(ids, false); sb.String() != want {
				t.Errorf("%s text %d: streamed %q, want %q", family, i, sb.String(), want)
			}
		}
	}
}

// TestStreamDecoderHoldsPartialChars checks which Add calls emit text for a
// character split across byte tokens.
func TestStreamDecoderHoldsPartialChars(t *testing.T) {
	tests := []struct {
		tok  string
		ids  []int
		want []string
	}{
		// Mistral: "▁Hi" then "🦙" (not in the vocabulary) as four
		// byte-fallback tokens <0xF0><0x9F><0xA6><0x99> (id = byte + 3).
		{"mistral", []int{15359, 243, 162, 169, 156}, []string{"Hi", "", "", "", "🦙"}},
		// tiny byte-level: "é" is bytes C3 A9 = ids 195, 169.
		{"tiny", []int{72, 195, 169, 33}, []string{"H", "", "é", "!"}},
	}
	for _, tc := range tests {
		tk := loadTestdata(t, tc.tok)
		ids := tc.ids
		if tc.tok == "mistral" {
			if got := tk.Encode("Hi🦙", false); !slices.Equal(got, ids) {
				t.Errorf("mistral: Encode(Hi🦙) = %v, want %v", got, ids)
			}
		}
		d := tk.NewStreamDecoder(true)
		for k, id := range ids {
			if got := d.Add(id); got != tc.want[k] {
				t.Errorf("%s: Add(%d) #%d = %q, want %q", tc.tok, id, k, got, tc.want[k])
			}
		}
		if got := d.Flush(); got != "" {
			t.Errorf("%s: Flush = %q, want empty", tc.tok, got)
		}
	}
	// An unfinished character comes out of Flush as U+FFFD.
	d := loadTestdata(t, "tiny").NewStreamDecoder(false)
	if got := d.Add(195); got != "" {
		t.Errorf("Add(0xC3) = %q", got)
	}
	if got := d.Flush(); got != "\uFFFD" {
		t.Errorf("Flush = %q, want U+FFFD", got)
	}
}

// writeTokenizerDir writes files into a temporary checkpoint directory.
func writeTokenizerDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tinyJSON returns the tiny tokenizer.json decoded as a generic map, to be
// edited by tests.
func tinyJSON(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/tiny/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLoadErrors(t *testing.T) {
	withField := func(key string, val any) string {
		m := tinyJSON(t)
		m[key] = val
		return mustJSON(t, m)
	}
	withModel := func(key string, val any) string {
		m := tinyJSON(t)
		m["model"].(map[string]any)[key] = val
		return mustJSON(t, m)
	}
	tests := []struct {
		name        string
		files       map[string]string
		file        string // must appear in the message
		unsupported *UnsupportedError
		notExist    bool
	}{
		{name: "missing tokenizer.json", files: map[string]string{"tokenizer_config.json": "{}"}, file: "tokenizer.json", notExist: true},
		{name: "corrupt JSON", files: map[string]string{"tokenizer.json": `{"model": {"type": "BPE", "vocab": {`}, file: "tokenizer.json"},
		{name: "empty", files: map[string]string{"tokenizer.json": ""}, file: "tokenizer.json"},
		{name: "no model", files: map[string]string{"tokenizer.json": `{"version": "1.0"}`}, file: "tokenizer.json"},
		{name: "unigram model", files: map[string]string{"tokenizer.json": `{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}`},
			file: "tokenizer.json", unsupported: &UnsupportedError{"model", "Unigram"}},
		{name: "wordpiece model", files: map[string]string{"tokenizer.json": `{"model": {"type": "WordPiece", "vocab": {"a": 0}}}`},
			file: "tokenizer.json", unsupported: &UnsupportedError{"model", "WordPiece"}},
		{name: "pre_tokenizer", files: map[string]string{"tokenizer.json": withField("pre_tokenizer", map[string]any{"type": "BertPreTokenizer"})},
			file: "tokenizer.json", unsupported: &UnsupportedError{"pre_tokenizer", "BertPreTokenizer"}},
		{name: "nested pre_tokenizer", files: map[string]string{"tokenizer.json": withField("pre_tokenizer", map[string]any{"type": "Sequence", "pretokenizers": []any{map[string]any{"type": "Punctuation"}}})},
			file: "tokenizer.json", unsupported: &UnsupportedError{"pre_tokenizer", "Punctuation"}},
		{name: "normalizer", files: map[string]string{"tokenizer.json": withField("normalizer", map[string]any{"type": "Precompiled", "precompiled_charsmap": "AA=="})},
			file: "tokenizer.json", unsupported: &UnsupportedError{"normalizer", "Precompiled"}},
		{name: "decoder", files: map[string]string{"tokenizer.json": withField("decoder", map[string]any{"type": "WordPiece"})},
			file: "tokenizer.json", unsupported: &UnsupportedError{"decoder", "WordPiece"}},
		{name: "post_processor", files: map[string]string{"tokenizer.json": withField("post_processor", map[string]any{"type": "Weird"})},
			file: "tokenizer.json", unsupported: &UnsupportedError{"post_processor", "Weird"}},
		{name: "bad regex", files: map[string]string{"tokenizer.json": withField("pre_tokenizer", map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "(a"}, "behavior": "Isolated"})}, file: "tokenizer.json"},
		{name: "merge of unknown token", files: map[string]string{"tokenizer.json": withModel("merges", []any{"Ġ zzzz"})}, file: "tokenizer.json"},
		{name: "malformed merge", files: map[string]string{"tokenizer.json": withModel("merges", []any{"Ġt"})}, file: "tokenizer.json"},
		{name: "unk not in vocab", files: map[string]string{"tokenizer.json": withModel("unk_token", "<nope>")}, file: "tokenizer.json"},
		{name: "bad tokenizer_config", files: map[string]string{"tokenizer.json": withField("version", "1.0"), "tokenizer_config.json": "{"}, file: "tokenizer_config.json"},
		{name: "bad generation_config", files: map[string]string{"tokenizer.json": withField("version", "1.0"), "generation_config.json": `{"eos_token_id": "x"}`}, file: "generation_config.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTokenizerDir(t, tc.files)
			tk, err := Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded (%v)", tk != nil)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) {
				t.Errorf("error %q does not name %s", err, tc.file)
			}
			if !strings.HasPrefix(err.Error(), "tokenizer: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if tc.notExist && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v is not fs.ErrNotExist", err)
			}
			if tc.unsupported != nil {
				var ue *UnsupportedError
				if !errors.As(err, &ue) || *ue != *tc.unsupported {
					t.Errorf("error %v, want UnsupportedError %+v", err, *tc.unsupported)
				}
			}
		})
	}
}

// TestSpecialTokenLookalike checks that added tokens are split out even
// with addSpecial false, and only where they match exactly.
func TestSpecialTokenLookalike(t *testing.T) {
	tk := loadTestdata(t, "llama3")
	got := tk.Encode("a<|eot_id|>b<|eot_id |>", false)
	if len(got) < 3 || got[1] != 128009 || slices.Contains(got[3:], 128009) {
		t.Errorf("Encode = %v; want <|eot_id|>=128009 once at index 1", got)
	}
}
