package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dlclark/regexp2"
)

// regexTimeout bounds one regex match so a pathological pattern cannot hang
// Encode; real pre-tokenizer patterns match in microseconds.
const regexTimeout = 10 * time.Second

// pattern is a tokenizers Pattern: a literal string or a regular expression.
type pattern struct {
	literal string
	re      *regexp2.Regexp
	fast    *scanner // hand-written matcher for a well-known regex, or nil
}

type rawPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func parsePattern(raw json.RawMessage) (*pattern, error) {
	var rp rawPattern
	if err := json.Unmarshal(raw, &rp); err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	switch {
	case rp.String != nil:
		if *rp.String == "" {
			return nil, fmt.Errorf("pattern: empty String pattern")
		}
		return &pattern{literal: *rp.String}, nil
	case rp.Regex != nil:
		re, err := regexp2.Compile(*rp.Regex, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("pattern: compile %q: %w", *rp.Regex, err)
		}
		re.MatchTimeout = regexTimeout
		return &pattern{re: re, fast: knownScanner(*rp.Regex)}, nil
	}
	return nil, fmt.Errorf("pattern: neither String nor Regex in %s", raw)
}

// span is a half-open byte range of a match.
type span struct{ start, end int }

// findAll returns the byte ranges of all non-overlapping matches in s.
// Empty regex matches are ignored, as in tokenizers.
func (p *pattern) findAll(s string) []span {
	var out []span
	if p.re == nil {
		for off := 0; ; {
			i := strings.Index(s[off:], p.literal)
			if i < 0 {
				return out
			}
			out = append(out, span{off + i, off + i + len(p.literal)})
			off += i + len(p.literal)
		}
	}
	if s == "" {
		return nil
	}
	if p.fast != nil {
		return p.fast.findAll(s)
	}
	return p.regexFindAll(s)
}

// regexFindAll is findAll through regexp2.
func (p *pattern) regexFindAll(s string) []span {
	var out []span
	runes := []rune(s)
	// Byte offset of every rune index (plus the end).
	offs := make([]int, len(runes)+1)
	b := 0
	for i, r := range runes {
		offs[i] = b
		b += runeLen(r)
	}
	offs[len(runes)] = b
	m, err := p.re.FindRunesMatch(runes)
	for err == nil && m != nil {
		if m.Length > 0 {
			out = append(out, span{offs[m.Index], offs[m.Index+m.Length]})
		}
		m, err = p.re.FindNextMatch(m)
	}
	// A timeout leaves the remaining text unmatched; it is still encoded.
	return out
}

func runeLen(r rune) int {
	switch {
	case r < 0x80:
		return 1
	case r < 0x800:
		return 2
	case r < 0x10000:
		return 3
	}
	return 4
}

// replaceAll replaces every match of p in s with repl.
func (p *pattern) replaceAll(s, repl string) string {
	if p.re == nil {
		return strings.ReplaceAll(s, p.literal, repl)
	}
	spans := p.findAll(s)
	if len(spans) == 0 {
		return s
	}
	var sb strings.Builder
	last := 0
	for _, sp := range spans {
		sb.WriteString(s[last:sp.start])
		sb.WriteString(repl)
		last = sp.end
	}
	sb.WriteString(s[last:])
	return sb.String()
}
