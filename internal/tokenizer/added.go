package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AddedToken is an entry of tokenizer.json's added_tokens.
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// addedMatcher finds added tokens in text: leftmost match first, longest
// token among those starting at the same place.
type addedMatcher struct {
	byFirst [256][]matchEntry // by first byte; longest pattern first
}

type matchEntry struct {
	pat string
	tok *AddedToken
}

func newAddedMatcher(entries []matchEntry) *addedMatcher {
	if len(entries) == 0 {
		return nil
	}
	m := &addedMatcher{}
	for _, e := range entries {
		if e.pat == "" {
			continue
		}
		m.byFirst[e.pat[0]] = append(m.byFirst[e.pat[0]], e)
	}
	for _, list := range &m.byFirst {
		sort.SliceStable(list, func(i, j int) bool { return len(list[i].pat) > len(list[j].pat) })
	}
	return m
}

// segment is a part of the input: plain text, or an added token (tok != nil).
type segment struct {
	text    string
	tok     *AddedToken
	atStart bool
}

// split cuts s into text segments and added-token segments. lstrip/rstrip
// tokens absorb the whitespace beside them; single_word tokens only match
// when not adjacent to a word character.
func (m *addedMatcher) split(s string, atStart bool) []segment {
	if m == nil || s == "" {
		return []segment{{text: s, atStart: atStart}}
	}
	var out []segment
	textStart := 0
	for i := 0; i < len(s); {
		if len(m.byFirst[s[i]]) == 0 {
			i++
			continue
		}
		var hit *matchEntry
		for k, e := range m.byFirst[s[i]] {
			if !strings.HasPrefix(s[i:], e.pat) {
				continue
			}
			if e.tok.SingleWord && !isWordBoundary(s, i, i+len(e.pat)) {
				continue
			}
			hit = &m.byFirst[s[i]][k]
			break
		}
		if hit == nil {
			i++
			continue
		}
		start, end := i, i+len(hit.pat)
		if hit.tok.LStrip {
			for start > textStart {
				r, size := utf8.DecodeLastRuneInString(s[textStart:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= size
			}
		}
		if hit.tok.RStrip {
			for end < len(s) {
				r, size := utf8.DecodeRuneInString(s[end:])
				if !unicode.IsSpace(r) {
					break
				}
				end += size
			}
		}
		if start > textStart {
			out = append(out, segment{text: s[textStart:start], atStart: atStart && textStart == 0})
		}
		out = append(out, segment{text: s[start:end], tok: hit.tok})
		textStart, i = end, end
	}
	if textStart < len(s) {
		out = append(out, segment{text: s[textStart:], atStart: atStart && textStart == 0})
	}
	return out
}

// isWordBoundary reports whether s[start:end] is not glued to a letter,
// digit or underscore on either side.
func isWordBoundary(s string, start, end int) bool {
	isWord := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_' }
	if start > 0 {
		if r, _ := utf8.DecodeLastRuneInString(s[:start]); isWord(r) {
			return false
		}
	}
	if end < len(s) {
		if r, _ := utf8.DecodeRuneInString(s[end:]); isWord(r) {
			return false
		}
	}
	return true
}
