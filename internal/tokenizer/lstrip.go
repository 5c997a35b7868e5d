package tokenizer

import "strings"

// lstripBlocks rewrites a Jinja source so that rendering it without
// lstrip_blocks gives what Jinja gives with lstrip_blocks (and trim_blocks)
// on. gonja's own LeftStripBlocks also strips spaces before a block that
// follows a {{ ... }} on the same line, which Jinja keeps
// ("a {{ x }} {% if y %}" keeps its space); this rewrite follows Jinja's
// lexer instead: spaces and tabs before {% or {# (without a + or - sign)
// are removed when only they stand between the tag and the start of its
// line, where the line starts after a newline in the text, at the start of
// the template, or after a block or comment tag whose closing newline
// trim_blocks removed. {% raw %} sections are copied unchanged.
func lstripBlocks(src string) string {
	var out strings.Builder
	out.Grow(len(src))
	lineStarting := true
	pos := 0
	for pos < len(src) {
		k := nextTagStart(src, pos)
		if k < 0 {
			out.WriteString(src[pos:])
			break
		}
		text := src[pos:k]
		kind := src[k+1]
		sign := byte(0)
		if k+2 < len(src) {
			sign = src[k+2]
		}
		if (kind == '%' || kind == '#') && sign != '+' && sign != '-' {
			lpos := strings.LastIndexByte(text, '\n') + 1
			if (lpos > 0 || lineStarting) && lpos < len(text) && strings.Trim(text[lpos:], " \t\r\f\v") == "" {
				text = text[:lpos]
			}
		}
		out.WriteString(text)
		end := tagEnd(src, k)
		if end < 0 { // unterminated: let the parser report it
			out.WriteString(src[k:])
			break
		}
		tag := src[k:end]
		out.WriteString(tag)
		pos = end
		lineStarting = false
		if kind != '{' && pos < len(src) && src[pos] == '\n' && tag[len(tag)-3] != '-' {
			lineStarting = true // trim_blocks eats this newline
		}
		if kind == '%' && isRawTag(tag) {
			// Copy up to and including {% endraw %} verbatim.
			if e := findEndRaw(src, pos); e >= 0 {
				out.WriteString(src[pos:e])
				pos = e
				lineStarting = false
			}
		}
	}
	return out.String()
}

// nextTagStart returns the index of the next "{{", "{%" or "{#" at or after
// pos, or -1.
func nextTagStart(src string, pos int) int {
	for i := pos; i+1 < len(src); i++ {
		if src[i] == '{' && (src[i+1] == '{' || src[i+1] == '%' || src[i+1] == '#') {
			return i
		}
	}
	return -1
}

// tagEnd returns the index just past the tag starting at k, skipping
// quoted strings inside {{ }} and {% %}; -1 if it is not closed.
func tagEnd(src string, k int) int {
	kind := src[k+1]
	closer := "}}"
	switch kind {
	case '%':
		closer = "%}"
	case '#':
		return indexFrom(src, "#}", k+2, 2)
	}
	var quote byte
	for i := k + 2; i < len(src); i++ {
		c := src[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case strings.HasPrefix(src[i:], closer):
			return i + 2
		}
	}
	return -1
}

func indexFrom(s, sub string, from, extra int) int {
	if i := strings.Index(s[from:], sub); i >= 0 {
		return from + i + extra
	}
	return -1
}

// isRawTag reports whether a block tag is {% raw %}.
func isRawTag(tag string) bool {
	body := strings.Trim(tag[2:len(tag)-2], "+- \t\r\n")
	return body == "raw"
}

// findEndRaw returns the index of the "{%" that opens {% endraw %} at or
// after pos, or -1.
func findEndRaw(src string, pos int) int {
	for i := pos; ; {
		k := strings.Index(src[i:], "{%")
		if k < 0 {
			return -1
		}
		k += i
		body := src[k+2:]
		body = strings.TrimLeft(body, "+- \t\r\n")
		if strings.HasPrefix(body, "endraw") {
			return k
		}
		i = k + 2
	}
}
