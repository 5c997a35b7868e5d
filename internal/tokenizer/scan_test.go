package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unicode/utf8"
)

// alphabet mixes every character class the patterns distinguish.
var scanAlphabet = []rune("aZé日'sStTrReEvVmMlLdD 0٣5\t\n\r\v\f\u00a0\u2009\u3000\u0085!?.-_😀\u0301\u200b")

func scanPatterns(t testing.TB) map[string]*pattern {
	out := map[string]*pattern{}
	for name, src := range map[string]string{"gpt2": gpt2Pattern, "llama3": llama3Pattern, "qwen": qwenPattern} {
		raw, _ := json.Marshal(map[string]string{"Regex": src})
		p, err := parsePattern(raw)
		if err != nil {
			t.Fatal(err)
		}
		if p.fast == nil {
			t.Fatalf("%s: no fast scanner", name)
		}
		out[name] = p
	}
	return out
}

func checkScan(t *testing.T, pats map[string]*pattern, s string) {
	t.Helper()
	for name, p := range pats {
		got, want := p.fast.findAll(s), p.regexFindAll(s)
		if !slices.Equal(got, want) {
			t.Fatalf("%s on %q:\n fast  %v\n regex %v", name, s, got, want)
		}
	}
}

// TestScannerMatchesRegexp2 compares the hand-written scanners with
// regexp2 on the vector texts and on random strings.
func TestScannerMatchesRegexp2(t *testing.T) {
	pats := scanPatterns(t)
	for _, s := range readVectors(t).Texts {
		checkScan(t, pats, s)
	}
	fixed := []string{"", " ", "  ", "a  b", "x \n\n y", "'S'LL'Re're'x", "  !!\n\n\r ", "12345678", " 1", "\t\tindent", "a\u00a0 b", "'", "' s", " '"}
	for _, s := range fixed {
		checkScan(t, pats, s)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		n := rng.IntN(12)
		rs := make([]rune, n)
		for k := range rs {
			rs[k] = scanAlphabet[rng.IntN(len(scanAlphabet))]
		}
		checkScan(t, pats, string(rs))
	}
}

func FuzzScanner(f *testing.F) {
	for _, s := range []string{"Hello world's 123!!\n\n  x", "'LL \r\n\t 1234 ", "日本語 🙂  end  "} {
		f.Add(s)
	}
	pats := scanPatterns(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // Encode sanitizes invalid UTF-8 before scanning
		}
		checkScan(t, pats, s)
	})
}

func ExampleTokenizer_Encode() {
	tk, err := Load("testdata/tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	ids := tk.Encode("Hello, world!", true)
	fmt.Println(ids)
	fmt.Println(tk.Decode(ids, true))
	// Output:
	// [1016 72 470 111 44 696 33]
	// Hello, world!
}
