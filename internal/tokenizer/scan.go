package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Hand-written scanners for the split patterns of GPT-2, Llama 3 and Qwen 2/3.
// They give exactly the matches regexp2 gives for the same pattern (the
// differential tests check this) at a fraction of the cost. Character
// classes follow regexp2: \s is unicode.IsSpace, \p{L} is unicode.L,
// \p{N} is unicode.N, and (?i) compares unicode.ToLower of each rune.

const (
	// llama3Pattern is Llama 3's Split regex.
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// qwenPattern is Qwen 2/3's Split regex: digits one at a time.
	qwenPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanner finds the matches of one known pattern.
type scanner struct {
	gpt2      bool // GPT-2 layout; otherwise the Llama 3 / Qwen layout
	maxDigits int  // digits per match in the Llama 3 layout
}

// knownScanner returns the scanner for a regex source, or nil.
func knownScanner(src string) *scanner {
	switch src {
	case gpt2Pattern:
		return &scanner{gpt2: true}
	case llama3Pattern:
		return &scanner{maxDigits: 3}
	case qwenPattern:
		return &scanner{maxDigits: 1}
	}
	return nil
}

func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }
func isS(r rune) bool { return unicode.IsSpace(r) }

// isP is [^\s\p{L}\p{N}].
func isP(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }

func isCRLF(r rune) bool { return r == '\r' || r == '\n' }

// at decodes the rune at byte offset i; past the end it returns -1.
func at(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	return r, n
}

// run advances from i over runes satisfying f, at most max of them
// (max <= 0: no limit), and returns the end offset.
func run(s string, i int, f func(rune) bool, max int) int {
	for k := 0; max <= 0 || k < max; k++ {
		r, n := at(s, i)
		if n == 0 || !f(r) {
			break
		}
		i += n
	}
	return i
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i, case-insensitively
// when fold is set, and returns the end offset or -1.
func contraction(s string, i int, fold bool) int {
	if i >= len(s) || s[i] != '\'' {
		return -1
	}
	lower := func(k int) (rune, int) {
		r, n := at(s, k)
		if fold && n > 0 {
			r = unicode.ToLower(r)
		}
		return r, n
	}
	r1, n1 := lower(i + 1)
	switch r1 {
	case 's', 't', 'm', 'd':
		return i + 1 + n1
	case 'r', 'v', 'l':
		r2, n2 := lower(i + 1 + n1)
		if (r1 == 'r' || r1 == 'v') && r2 == 'e' || r1 == 'l' && r2 == 'l' {
			return i + 1 + n1 + n2
		}
	}
	return -1
}

// spaceTail matches \s+(?!\S)|\s+ at i (a whitespace rune): the run of
// whitespace, minus its last rune when a non-space follows and the run is
// longer than one rune.
func spaceTail(s string, i int) int {
	end := run(s, i, isS, 0)
	if end == len(s) {
		return end
	}
	_, lastLen := utf8.DecodeLastRuneInString(s[:end])
	if end-lastLen > i {
		return end - lastLen
	}
	return end
}

// next returns the end of the match that starts at i (< len(s)). Every
// position starts a match for these patterns, so matches tile the text.
func (sc *scanner) next(s string, i int) int {
	if sc.gpt2 {
		return sc.nextGPT2(s, i)
	}
	if e := contraction(s, i, true); e >= 0 {
		return e
	}
	c0, n0 := at(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(c0) {
		return run(s, i, isL, 0)
	}
	if !isCRLF(c0) && !isN(c0) {
		if c1, _ := at(s, i+n0); c1 >= 0 && isL(c1) {
			return run(s, i+n0, isL, 0)
		}
	}
	// \p{N}{1,maxDigits}
	if isN(c0) {
		return run(s, i, isN, sc.maxDigits)
	}
	// ?[^\s\p{L}\p{N}]+[\r\n]*
	j := -1
	if c0 == ' ' {
		if c1, _ := at(s, i+n0); c1 >= 0 && isP(c1) {
			j = i + n0
		}
	} else if isP(c0) {
		j = i
	}
	if j >= 0 {
		return run(s, run(s, j, isP, 0), isCRLF, 0)
	}
	// \s*[\r\n]+ : up to the last \r or \n of the whitespace run.
	end := run(s, i, isS, 0)
	for k := end; k > i; {
		r, n := utf8.DecodeLastRuneInString(s[:k])
		if isCRLF(r) {
			return k
		}
		k -= n
	}
	// \s+(?!\S)|\s+
	return spaceTail(s, i)
}

// nextGPT2 is next for
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func (sc *scanner) nextGPT2(s string, i int) int {
	if e := contraction(s, i, false); e >= 0 {
		return e
	}
	c0, n0 := at(s, i)
	for _, class := range []func(rune) bool{isL, isN, isP} {
		if class(c0) {
			return run(s, i, class, 0)
		}
		if c0 == ' ' {
			if c1, _ := at(s, i+n0); c1 >= 0 && class(c1) {
				return run(s, i+n0, class, 0)
			}
		}
	}
	return spaceTail(s, i)
}

// findAll returns the matches of the pattern in s.
func (sc *scanner) findAll(s string) []span {
	out := make([]span, 0, len(s)/4+1)
	for i := 0; i < len(s); {
		e := sc.next(s, i)
		out = append(out, span{i, e})
		i = e
	}
	return out
}
