package tokenizer

import (
	"encoding/json"
	"slices"
	"testing"
)

func pieceTexts(ps []piece) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.text
	}
	return out
}

func TestSplitBehaviors(t *testing.T) {
	// The example of the tokenizers documentation for SplitDelimiterBehavior.
	const text = "the-final--countdown"
	tests := []struct {
		behavior string
		invert   bool
		want     []string
	}{
		{"Removed", false, []string{"the", "final", "countdown"}},
		{"Isolated", false, []string{"the", "-", "final", "-", "-", "countdown"}},
		{"MergedWithPrevious", false, []string{"the-", "final-", "-", "countdown"}},
		{"MergedWithNext", false, []string{"the", "-final", "-", "-countdown"}},
		{"Contiguous", false, []string{"the", "-", "final", "--", "countdown"}},
		{"Removed", true, []string{"-", "-", "-"}},
	}
	for _, tc := range tests {
		for _, pat := range []string{`{"String":"-"}`, `{"Regex":"-"}`} {
			p, err := parsePattern(json.RawMessage(pat))
			if err != nil {
				t.Fatal(err)
			}
			s := &splitPre{pat: p, behavior: tc.behavior, invert: tc.invert}
			if got := pieceTexts(s.preTokenize([]piece{{text: text}})); !slices.Equal(got, tc.want) {
				t.Errorf("%s invert=%v %s: got %q, want %q", tc.behavior, tc.invert, pat, got, tc.want)
			}
		}
	}
}

func TestPreTokenizers(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		in      string
		atStart bool
		want    []string
	}{
		{"metaspace always", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}`, "Hey  friend!", false, []string{"▁Hey", "▁", "▁friend!"}},
		{"metaspace first at start", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true}`, "Hey friend", true, []string{"▁Hey", "▁friend"}},
		{"metaspace first later", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true}`, "Hey friend", false, []string{"Hey", "▁friend"}},
		{"metaspace no split", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"never","split":false}`, "Hey friend", true, []string{"Hey▁friend"}},
		{"metaspace legacy add_prefix_space", `{"type":"Metaspace","replacement":"▁","add_prefix_space":true}`, "a b", false, []string{"▁a", "▁b"}},
		{"digits individual", `{"type":"Digits","individual_digits":true}`, "Call 123 please", false, []string{"Call ", "1", "2", "3", " please"}},
		{"digits contiguous", `{"type":"Digits","individual_digits":false}`, "Call 123 please", false, []string{"Call ", "123", " please"}},
		{"whitespace split", `{"type":"WhitespaceSplit"}`, " a\tbc  d ", false, []string{"a", "bc", "d"}},
		{"whitespace", `{"type":"Whitespace"}`, "Hey, you!!", false, []string{"Hey", ",", "you", "!!"}},
		{"byte level regex", `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`, "Hi  there's 42!", false, []string{"Hi", "Ġ", "Ġthere", "'s", "Ġ42", "!"}},
		{"byte level prefix space", `{"type":"ByteLevel","add_prefix_space":true,"use_regex":true}`, "Hi", false, []string{"ĠHi"}},
		{"byte level no regex", `{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}`, "a b\n", false, []string{"aĠbĊ"}},
		{"sequence", `{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Digits","individual_digits":true}]}`, "ab12 c", false, []string{"ab", "1", "2", "c"}},
	}
	for _, tc := range tests {
		p, err := parsePreTokenizer(json.RawMessage(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := pieceTexts(p.preTokenize([]piece{{text: tc.in, atStart: tc.atStart}})); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestNormalizers(t *testing.T) {
	tests := []struct{ json, in, want string }{
		{`{"type":"NFC"}`, "e\u0301", "é"},
		{`{"type":"NFD"}`, "é", "e\u0301"},
		{`{"type":"NFKC"}`, "ﬁ½", "fi1⁄2"},
		{`{"type":"Lowercase"}`, "HeLLo", "hello"},
		{`{"type":"Strip","left":true,"right":false}`, "  a  ", "a  "},
		{`{"type":"Prepend","prepend":"▁"}`, "", ""},
		{`{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}`, "a b", "▁a▁b"},
		{`{"type":"Replace","pattern":{"Regex":" {2,}"},"content":" "}`, "a   b  c", "a b c"},
	}
	for _, tc := range tests {
		n, err := parseNormalizer(json.RawMessage(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if got := n.normalize(tc.in); got != tc.want {
			t.Errorf("%s(%q) = %q, want %q", tc.json, tc.in, got, tc.want)
		}
	}
}

// newTestBPE builds a BPE model from a vocabulary list (id = index) and merges.
func newTestBPE(t *testing.T, vocab []string, merges []string, extra func(*rawBPE)) *bpe {
	t.Helper()
	r := &rawBPE{Type: "BPE", Vocab: map[string]int{}}
	for i, v := range vocab {
		r.Vocab[v] = i
	}
	for _, m := range merges {
		b, _ := json.Marshal(m)
		r.Merges = append(r.Merges, b)
	}
	if extra != nil {
		extra(r)
	}
	m, err := parseBPE(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBPEMerges(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		name   string
		vocab  []string
		merges []string
		extra  func(*rawBPE)
		word   string
		want   []int
	}{
		{"rank order", []string{"a", "b", "c", "ab", "bc", "abc"}, []string{"b c", "a b", "a bc"}, nil, "abc", []int{5}},
		{"rank order other way", []string{"a", "b", "c", "ab", "bc", "abc"}, []string{"a b", "b c", "ab c"}, nil, "abc", []int{5}},
		{"no merge for pair", []string{"a", "b", "c", "ab", "bc"}, []string{"b c", "a b"}, nil, "abc", []int{0, 4}},
		{"leftmost on ties", []string{"a", "aa"}, []string{"a a"}, nil, "aaa", []int{1, 0}},
		{"repeated merges", []string{"a", "aa", "aaaa"}, []string{"a a", "aa aa"}, nil, "aaaaaaaaa", []int{2, 2, 0}},
		{"unk fused", []string{"<unk>", "a"}, nil, func(r *rawBPE) { r.UnkToken, r.FuseUnk = str("<unk>"), true }, "axyaz", []int{1, 0, 1, 0}},
		{"unk not fused", []string{"<unk>", "a"}, nil, func(r *rawBPE) { r.UnkToken = str("<unk>") }, "axya", []int{1, 0, 0, 1}},
		{"no unk drops", []string{"a"}, nil, nil, "axa", []int{0, 0}},
		{"byte fallback", []string{"<unk>", "<0xC3>", "<0xA9>", "a"}, nil, func(r *rawBPE) { r.UnkToken, r.ByteFall = str("<unk>"), true }, "aéb", []int{3, 1, 2, 0}},
		{"ignore merges", []string{"a", "b", "c", "ab", "abc"}, []string{"a b"}, func(r *rawBPE) { r.IgnoreMerge = true }, "abc", []int{4}},
		{"without ignore merges", []string{"a", "b", "c", "ab", "abc"}, []string{"a b"}, nil, "abc", []int{3, 2}},
		{"subword prefix and suffix", []string{"a", "##b", "##c</w>", "a##b", "ab", "abc</w>"}, []string{"a ##b", "ab ##c</w>"},
			func(r *rawBPE) { r.Prefix, r.Suffix = str("##"), str("</w>") }, "abc", []int{5}},
	}
	for _, tc := range tests {
		m := newTestBPE(t, tc.vocab, tc.merges, tc.extra)
		if got := m.encodeWord(nil, tc.word); !slices.Equal(got, tc.want) {
			t.Errorf("%s: encodeWord(%q) = %v, want %v", tc.name, tc.word, got, tc.want)
		}
		// Second call comes from the cache.
		if got := m.encodeWord([]int{-1}, tc.word); !slices.Equal(got[1:], tc.want) || got[0] != -1 {
			t.Errorf("%s: cached encodeWord = %v", tc.name, got)
		}
	}
}

func TestParseMerge(t *testing.T) {
	tests := []struct {
		raw  string
		a, b string
		ok   bool
	}{
		{`"Ġ t"`, "Ġ", "t", true},
		{`["Ġ", "t"]`, "Ġ", "t", true},
		{` [ "a b" , "c" ] `, "a b", "c", true},
		{`["\u0120\"", "x"]`, "Ġ\"", "x", true},
		{`"a\"b c"`, `a"b`, "c", true},
		{`"ab"`, "", "", false},
		{`"a b c"`, "", "", false},
		{`["a"]`, "", "", false},
		{`["a","b","c"]`, "", "", false},
		{`7`, "", "", false},
		{`"a b`, "", "", false},
	}
	for _, tc := range tests {
		a, b, err := parseMerge(json.RawMessage(tc.raw))
		if (err == nil) != tc.ok || a != tc.a || b != tc.b {
			t.Errorf("parseMerge(%s) = %q, %q, %v; want %q, %q, ok=%v", tc.raw, a, b, err, tc.a, tc.b, tc.ok)
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	tests := []struct{ in, want string }{
		{"héllo", "héllo"},
		{"\xff\xfe", "\uFFFD\uFFFD"},
		{"a\xf0\x9f\x98", "a\uFFFD"},
		{"\xf0\x9f\x98b", "\uFFFDb"},
		{"\xe2\x82\xe2\x82\xac", "\uFFFD€"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: ED A0 is not a valid start
		{"\xc0\xaf", "\uFFFD\uFFFD"},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
	}
	for _, tc := range tests {
		if got := lossyUTF8([]byte(tc.in)); got != tc.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDecoders(t *testing.T) {
	tests := []struct {
		json   string
		tokens []string
		want   string
	}{
		{`{"type":"ByteLevel"}`, []string{"Hello", "Ġw", "Ã©", "<|x|>"}, "Hello wé<|x|>"},
		{`{"type":"ByteLevel"}`, []string{"ð", "Ł"}, "\uFFFD"},
		{`{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}`,
			[]string{"▁Hi", "<0xC3>", "<0xA9>", "▁", "<0xFF>", "x"}, "Hié \uFFFDx"},
		{`{"type":"Metaspace","replacement":"▁","prepend_scheme":"always"}`, []string{"▁Hey", "▁friend"}, "Hey friend"},
		{`{"type":"Metaspace","replacement":"▁","prepend_scheme":"never"}`, []string{"▁Hey", "▁friend"}, " Hey friend"},
		{`{"type":"Strip","content":"x","start":2,"stop":1}`, []string{"xxxaxx"}, "xax"},
	}
	for _, tc := range tests {
		d, err := parseDecoder(json.RawMessage(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		got := ""
		for _, s := range d.decodeChain(tc.tokens) {
			got += s
		}
		if got != tc.want {
			t.Errorf("%s %q: got %q, want %q", tc.json, tc.tokens, got, tc.want)
		}
	}
}

// TestAddedTokenFlags checks lstrip, rstrip, single_word and normalized on
// added tokens put into the tiny tokenizer.
func TestAddedTokenFlags(t *testing.T) {
	m := tinyJSON(t)
	added := m["added_tokens"].([]any)
	added = append(added,
		map[string]any{"id": 2000, "content": "<mask>", "lstrip": true, "special": true},
		map[string]any{"id": 2001, "content": "[X]", "rstrip": true, "special": true},
		map[string]any{"id": 2002, "content": "cat", "single_word": true},
		map[string]any{"id": 2003, "content": "<|begin", "special": true}, // shorter overlap
	)
	m["added_tokens"] = added
	tk, err := Parse(Files{Tokenizer: []byte(mustJSON(t, m))})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s string) []int { return tk.Encode(s, false) }
	cat := func(parts ...[]int) []int { return slices.Concat(parts...) }
	tests := []struct {
		in   string
		want []int
	}{
		{"a  <mask>b", cat(enc("a"), []int{2000}, enc("b"))},
		{"a [X] \n b", cat(enc("a "), []int{2001}, enc("b"))},
		{"cat concat cat.", cat([]int{2002}, enc(" concat "), []int{2002}, enc("."))},
		{"<|begin_of_text|>x<|begin", []int{1016, 120, 2003}},
	}
	for _, tc := range tests {
		if got := enc(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if slices.Contains(enc("cats"), 2002) {
		t.Error("single_word token matched inside a word")
	}
	if tk.VocabSize() != 2004 {
		t.Errorf("VocabSize = %d, want 2004", tk.VocabSize())
	}
	// Non-special added tokens survive skipSpecial; special ones do not.
	if got := tk.Decode([]int{2002, 2000, 32, 2001}, true); got != "cat " {
		t.Errorf("Decode(skip) = %q, want %q", got, "cat ")
	}
}

// TestNormalizedAddedTokens checks that normalized added tokens are matched
// in the normalized text and the others in the raw text.
func TestNormalizedAddedTokens(t *testing.T) {
	m := tinyJSON(t)
	m["normalizer"] = map[string]any{"type": "Lowercase"}
	m["added_tokens"] = append(m["added_tokens"].([]any),
		map[string]any{"id": 2000, "content": "HeLLo", "normalized": true},
		map[string]any{"id": 2001, "content": "ABC", "normalized": false},
	)
	tk, err := Parse(Files{Tokenizer: []byte(mustJSON(t, m))})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s string) []int { return tk.Encode(s, false) }
	tests := []struct {
		in   string
		want []int
	}{
		{"say HELLO", slices.Concat(enc("say "), []int{2000})},
		{"xABC", slices.Concat(enc("x"), []int{2001})},
	}
	for _, tc := range tests {
		if got := enc(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// The raw-text token does not match text that only normalizes to it.
	if got := enc("xabc"); slices.Contains(got, 2001) || tk.Decode(got, false) != "xabc" {
		t.Errorf("Encode(xabc) = %v", got)
	}
}

func TestByteLevelAlphabet(t *testing.T) {
	seen := map[rune]bool{}
	for b := 0; b < 256; b++ {
		r := byteToRune[b]
		if seen[r] {
			t.Fatalf("rune %U used twice", r)
		}
		seen[r] = true
		if back, ok := byteOfRune(r); !ok || int(back) != b {
			t.Errorf("byteOfRune(%U) = %d, %v; want %d", r, back, ok, b)
		}
	}
	// Spot values of the GPT-2 table: space is Ġ, newline Ċ, 0xAD is Ń.
	for b, want := range map[byte]rune{' ': 'Ġ', '\n': 'Ċ', 0xAD: 'Ń', 'a': 'a', 0: 'Ā', 0xFF: 'ÿ'} {
		if byteToRune[b] != want {
			t.Errorf("byteToRune[%#x] = %q, want %q", b, byteToRune[b], want)
		}
	}
	for _, r := range []rune{-1, 'Ń' + 1, 0x10FFFF, '日'} {
		if _, ok := byteOfRune(r); ok {
			t.Errorf("byteOfRune(%U) found", r)
		}
	}
}
