package tokenizer

import (
	"os"
	"testing"
	"unicode/utf8"
)

// FuzzEncodeDecode checks that byte-level BPE round-trips any valid UTF-8
// text (the tiny tokenizer has no normalizer) and that the stream decoder
// agrees with Decode.
func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"", "Hello, world!", "  x\t\n", "<|begin_of_text|>hi<|end_of_text|>", "日本語 🙂", "a\u0301", "\x00\x01"} {
		f.Add(s)
	}
	tk := loadTestdata(f, "tiny")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		ids := tk.Encode(s, false)
		if got := tk.Decode(ids, false); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
		d := tk.NewStreamDecoder(false)
		streamed := ""
		for _, id := range ids {
			streamed += d.Add(id)
		}
		if streamed+d.Flush() != s {
			t.Fatalf("streamed %q, want %q", streamed, s)
		}
	})
}

// FuzzParse feeds arbitrary tokenizer.json contents to Parse: it must return
// an error or a tokenizer that encodes without panicking.
func FuzzParse(f *testing.F) {
	tiny, err := os.ReadFile("testdata/tiny/tokenizer.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tiny, []byte(`{"bos_token":"<|begin_of_text|>","add_bos_token":true}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"pre_tokenizer":{"type":"Metaspace"},"decoder":{"type":"Metaspace"}}`), []byte(nil))
	f.Add([]byte(`{"model":{"vocab":{"<unk>":0,"<0x61>":1},"merges":[],"byte_fallback":true,"unk_token":"<unk>"},"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"}]}}`), []byte(`{"chat_template":[{"name":"default","template":"x"}]}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0},"merges":[["a","a"]]},"added_tokens":[{"id":5,"content":"a","lstrip":true,"rstrip":true,"single_word":true}]}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, tj, cfg []byte) {
		if len(tj) > 1<<16 {
			return
		}
		tk, err := Parse(Files{Tokenizer: tj, TokenizerConfig: cfg})
		if err != nil {
			return
		}
		for _, s := range []string{"Hello world 123", " a  b ", "<s>é\u0301🙂"} {
			ids := tk.Encode(s, true)
			_ = tk.Decode(ids, false)
			_ = tk.Decode(ids, true)
		}
	})
}
