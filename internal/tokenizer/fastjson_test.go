package tokenizer

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFastJSONMatchesEncodingJSON reads the vocabulary and merges of every
// real tokenizer.json in testdata with the hand-written parsers and with
// encoding/json (plus parseMerge) and requires the same result.
func TestFastJSONMatchesEncodingJSON(t *testing.T) {
	for _, family := range []string{"tiny", "llama3", "qwen3", "mistral", "gemma3"} {
		t.Run(family, func(t *testing.T) {
			data, err := readMaybeGzip(filepath.Join("testdata", family, TokenizerFile))
			if err != nil {
				t.Fatal(err)
			}
			var slow struct {
				AddedTokens []AddedToken `json:"added_tokens"`
				Model       struct {
					Vocab  map[string]int    `json:"vocab"`
					Merges []json.RawMessage `json:"merges"`
				} `json:"model"`
			}
			if err := json.Unmarshal(data, &slow); err != nil {
				t.Fatal(err)
			}
			raw, err := splitTokenizerJSON(data)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(raw.AddedTokens, slow.AddedTokens) {
				t.Error("added_tokens differ")
			}
			vocab, err := parseVocab(raw.Model.RawVocab)
			if err != nil {
				t.Fatal(err)
			}
			if len(vocab) == 0 || !maps.Equal(vocab, slow.Model.Vocab) {
				t.Fatalf("vocab: %d entries, encoding/json %d, or different", len(vocab), len(slow.Model.Vocab))
			}
			offs, err := mergeOffsets(raw.Model.mergesJSON)
			if err != nil {
				t.Fatal(err)
			}
			if len(offs) != len(slow.Model.Merges) {
				t.Fatalf("%d merges, encoding/json %d", len(offs), len(slow.Model.Merges))
			}
			for rank, off := range offs {
				a, b, err := mergeAt(raw.Model.mergesJSON, off)
				wa, wb, werr := parseMerge(slow.Model.Merges[rank])
				if err != nil || werr != nil || string(a) != wa || string(b) != wb {
					t.Fatalf("merge %d: %q %q %v; parseMerge %q %q %v", rank, a, b, err, wa, wb, werr)
				}
			}
		})
	}
}

// TestMergeAt runs parseMerge's cases through mergeAt.
func TestMergeAt(t *testing.T) {
	tests := []struct {
		raw  string
		a, b string
		ok   bool
	}{
		{`"Ġ t"`, "Ġ", "t", true},
		{`["Ġ", "t"]`, "Ġ", "t", true},
		{`[ "a b" , "c" ]`, "a b", "c", true},
		{`["\u0120\"", "x"]`, "Ġ\"", "x", true},
		{`"a\"b c"`, `a"b`, "c", true},
		{`"a\\ b"`, `a\`, "b", true},
		{`"ab"`, "", "", false},
		{`"a b c"`, "", "", false},
		{`" b"`, "", "", false},
		{`"a "`, "", "", false},
		{`["a"]`, "", "", false},
		{`["a","b","c"]`, "", "", false},
		{`[1,"b"]`, "", "", false},
		{`7`, "", "", false},
		{`"a b`, "", "", false},
		{`["a", "b"`, "", "", false},
		{``, "", "", false},
	}
	for _, tc := range tests {
		a, b, err := mergeAt([]byte(tc.raw), 0)
		if (err == nil) != tc.ok || string(a) != tc.a || string(b) != tc.b {
			t.Errorf("mergeAt(%s) = %q, %q, %v; want %q, %q, ok=%v", tc.raw, a, b, err, tc.a, tc.b, tc.ok)
		}
	}
}

// TestFastJSONErrors checks that malformed input is an error, never a
// silently different result.
func TestFastJSONErrors(t *testing.T) {
	objects := []struct {
		in   string
		want map[string]string // nil: an error
	}{
		{`{}`, map[string]string{}},
		{` { "a" : 1 , "b":[1,{"c":"]}"}], "a": null } `, map[string]string{"a": "null", "b": `[1,{"c":"]}"}]`}},
		{`{"a\u0062": "x\"y"}`, map[string]string{"ab": `"x\"y"`}},
		{`{"a": 1,}`, nil},
		{`{"a" 1}`, nil},
		{`{"a": 1} x`, nil},
		{`{"a": [1, 2}`, nil},
		{`{"a": "x`, nil},
		{"{\"a\": \"x\ny\"}", nil},
		{`[1]`, nil},
		{``, nil},
		{`{"a":}`, nil},
	}
	for _, tc := range objects {
		got, err := splitObject([]byte(tc.in))
		if tc.want == nil {
			if err == nil {
				t.Errorf("splitObject(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("splitObject(%q): %v", tc.in, err)
			continue
		}
		s := map[string]string{}
		for k, v := range got {
			s[k] = string(v)
		}
		if !maps.Equal(s, tc.want) {
			t.Errorf("splitObject(%q) = %v, want %v", tc.in, s, tc.want)
		}
	}
	vocabs := []struct {
		in   string
		want map[string]int
	}{
		{`{}`, map[string]int{}},
		{`{"a": 0, "\n": 1, "é": 2, "a": 3}`, map[string]int{"a": 3, "\n": 1, "é": 2}},
		{`{"a": 1.5}`, nil},
		{`{"a": "1"}`, nil},
		{`{"a": -}`, nil},
		{`{"a": 1 "b": 2}`, nil},
		{`{"a": 1`, nil},
		{`["a"]`, nil},
		{`{"a": 99999999999999999999}`, nil},
	}
	for _, tc := range vocabs {
		got, err := parseVocab([]byte(tc.in))
		if tc.want == nil {
			if err == nil {
				t.Errorf("parseVocab(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("parseVocab(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{`["a b",]`, `["a b" "c d"]`, `["a b"`, `{}`, `["a b"] x`} {
		if offs, err := mergeOffsets([]byte(in)); err == nil {
			t.Errorf("mergeOffsets(%q) = %v, want an error", in, offs)
		}
	}
}

// TestResolveMergesWorkers checks that the parallel merge resolution gives
// the same ranks and ids as one worker, and reports the lowest bad rank.
func TestResolveMergesWorkers(t *testing.T) {
	// Tokens a0..a(n-1) and merges "aI bI" -> "aIbI", enough to split.
	n := 3*parallelMerges + 7
	vocab := map[string]int{}
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range n {
		a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		vocab[a], vocab[b], vocab[a+b] = 3*i, 3*i+1, 3*i+2
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%q", a+" "+b)
	}
	sb.WriteByte(']')
	res, err := resolveMergesJSON([]byte(sb.String()), vocab, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != n {
		t.Fatalf("%d merges, want %d", len(res), n)
	}
	for i, r := range res {
		if r.key != uint64(3*i)<<32|uint64(3*i+1) || r.id != int32(3*i+2) {
			t.Fatalf("merge %d = %+v", i, r)
		}
	}
	// Two bad merges in different workers' ranges: the first is reported.
	delete(vocab, fmt.Sprintf("a%db%d", n-5, n-5))
	delete(vocab, fmt.Sprintf("a%db%d", 40000, 40000))
	_, err = resolveMergesJSON([]byte(sb.String()), vocab, "")
	if err == nil || !strings.Contains(err.Error(), "merge 40000 ") {
		t.Errorf("err = %v, want merge 40000's", err)
	}
}

// TestDuplicateMergeKeepsFirstRank parses a tokenizer.json that lists the
// pair "b c" twice: the first rank (0, before "a b") decides.
func TestDuplicateMergeKeepsFirstRank(t *testing.T) {
	for _, merges := range []string{`["b c", "a b", "b c"]`, `[["b", "c"], ["a", "b"], ["b", "c"]]`} {
		tj := `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, "merges": ` + merges + `}}`
		tk, err := Parse(Files{Tokenizer: []byte(tj)})
		if err != nil {
			t.Fatal(err)
		}
		if got := tk.Encode("abc", false); !slices.Equal(got, []int{0, 4}) {
			t.Errorf("merges %s: Encode(abc) = %v, want [0 4] (a, bc)", merges, got)
		}
	}
}
