package tokenizer

import "strings"

// rewriteConditionals rewrites Jinja conditional expressions ("X if C else
// Y") that gonja cannot parse into an equivalent form it can. gonja accepts a
// conditional only as the whole of a {{ }} output or a {% set %} value, and
// then without nesting; Jinja accepts one wherever an expression goes, so
// templates write "'<start_of_turn>' + role + '\n' + (prefix if loop.first
// else "")" (Gemma 3), conditionals in call arguments, list items and dict
// values, and chains "a if b else c if d else e".
//
// Each conditional inside a bracket group ((), [], {}) of any tag, and at the
// top level of a {{ }} output, becomes "((C) and [X] or [Y])[0]" (or
// "[none]" without an else). gonja's and/or short-circuit and return an
// operand, as Python's do, and a one-item list is always true, so the result
// is X when C is true and Y otherwise, and only the chosen branch is
// evaluated, as in Jinja. Text outside tags, comments, string literals and
// {% raw %} sections are left alone; a conditional inside a slice
// ("x[a if c else b:]") is left as written.
//
// The same pass turns transformers' {% generation %} ... {% endgeneration %}
// block, which gonja does not know, into {% if true %} ... {% endif %}.
func rewriteConditionals(src string) string {
	if !strings.Contains(src, "if") && !strings.Contains(src, "generation") {
		return src
	}
	var out strings.Builder
	out.Grow(len(src) + len(src)/8)
	pos := 0
	for pos < len(src) {
		k := nextTagStart(src, pos)
		if k < 0 {
			out.WriteString(src[pos:])
			break
		}
		out.WriteString(src[pos:k])
		end := tagEnd(src, k)
		if end < 0 {
			out.WriteString(src[k:])
			break
		}
		tag := src[k:end]
		pos = end
		kind := tag[1]
		if kind == '#' || len(tag) < 4 {
			out.WriteString(tag)
			continue
		}
		// Split off the delimiters and their whitespace-control signs.
		open, body, close := tag[:2], tag[2:len(tag)-2], tag[len(tag)-2:]
		if len(body) > 0 && (body[0] == '-' || body[0] == '+') {
			open, body = tag[:3], body[1:]
		}
		if len(body) > 0 && (body[len(body)-1] == '-' || body[len(body)-1] == '+') {
			close, body = tag[len(tag)-3:], body[:len(body)-1]
		}
		switch {
		case kind == '{':
			body = rewriteCondExpr(body)
		case strings.TrimSpace(body) == "generation":
			// transformers' {% generation %} marks assistant text for
			// its masks and renders its body unchanged.
			body = " if true "
		case strings.TrimSpace(body) == "endgeneration":
			body = " endif "
		default:
			body = rewriteGroups(body)
		}
		out.WriteString(open)
		out.WriteString(body)
		out.WriteString(close)
		if kind == '%' && isRawTag(tag) {
			if e := findEndRaw(src, pos); e >= 0 {
				out.WriteString(src[pos:e])
				pos = e
			}
		}
	}
	return out.String()
}

// rewriteGroups rewrites the conditionals inside every bracket group of s,
// leaving its top level as it is.
func rewriteGroups(s string) string {
	var out strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\'' || c == '"' {
			i = skipString(s, i) - 1
			continue
		}
		if c != '(' && c != '[' && c != '{' {
			continue
		}
		end := matchBracket(s, i)
		if end < 0 {
			break // unbalanced: let the parser report it
		}
		out.WriteString(s[last : i+1])
		out.WriteString(rewriteGroupBody(s[i+1:end], c))
		last, i = end, end
	}
	if last == 0 {
		return s
	}
	out.WriteString(s[last:])
	return out.String()
}

// rewriteGroupBody rewrites each comma-separated item of a bracket group's
// contents: call arguments (with keyword arguments), tuple and list items,
// dict values.
func rewriteGroupBody(body string, open byte) string {
	items := splitTop(body, ',')
	for k, it := range items {
		switch {
		case open == '{':
			if key, val, ok := cutTop(it, ':'); ok {
				items[k] = rewriteGroups(key) + ":" + rewriteCondExpr(val)
				continue
			}
		case open == '[':
			if _, _, ok := cutTop(it, ':'); ok { // a slice
				items[k] = rewriteGroups(it)
				continue
			}
		case open == '(':
			if name, val, ok := cutKeyword(it); ok {
				items[k] = name + "=" + rewriteCondExpr(val)
				continue
			}
		}
		items[k] = rewriteCondExpr(it)
	}
	return strings.Join(items, ",")
}

// rewriteCondExpr rewrites one expression: its bracket groups first, then
// its own top-level conditional, if any.
func rewriteCondExpr(e string) string {
	e = rewriteGroups(e)
	i := findKeyword(e, "if")
	if i < 0 {
		return e
	}
	x, rest := e[:i], e[i+2:]
	cond, alt := rest, ""
	hasElse := false
	if j := findKeyword(rest, "else"); j >= 0 {
		cond, alt, hasElse = rest[:j], rest[j+4:], true
	}
	if strings.TrimSpace(x) == "" || strings.TrimSpace(cond) == "" || (hasElse && strings.TrimSpace(alt) == "") {
		return e // not an expression we understand: let the parser report it
	}
	lead := e[:len(e)-len(strings.TrimLeft(e, " \t\r\n"))]
	trail := e[len(strings.TrimRight(e, " \t\r\n")):]
	y := "none"
	if hasElse {
		y = strings.TrimSpace(rewriteCondExpr(alt))
	}
	return lead + "((" + strings.TrimSpace(cond) + ") and [" + strings.TrimSpace(x) + "] or [" + y + "])[0]" + trail
}

// findKeyword returns the index of the word kw at the top level of e
// (outside brackets and strings, not an attribute name), or -1.
func findKeyword(e, kw string) int {
	depth := 0
	for i := 0; i < len(e); i++ {
		c := e[i]
		switch {
		case c == '\'' || c == '"':
			i = skipString(e, i) - 1
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case depth == 0 && strings.HasPrefix(e[i:], kw):
			if i > 0 && (isWordByte(e[i-1]) || e[i-1] == '.') {
				continue
			}
			if j := i + len(kw); j < len(e) && isWordByte(e[j]) {
				continue
			}
			return i
		}
	}
	return -1
}

// splitTop splits s at sep where sep is outside brackets and strings.
func splitTop(s string, sep byte) []string {
	var parts []string
	depth, last := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			i = skipString(s, i) - 1
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case c == sep && depth == 0:
			parts = append(parts, s[last:i])
			last = i + 1
		}
	}
	return append(parts, s[last:])
}

// cutTop cuts s at the first top-level sep.
func cutTop(s string, sep byte) (before, after string, ok bool) {
	parts := splitTop(s, sep)
	if len(parts) < 2 {
		return s, "", false
	}
	return parts[0], s[len(parts[0])+1:], true
}

// cutKeyword recognises a keyword argument "name = value".
func cutKeyword(s string) (name, value string, ok bool) {
	t := strings.TrimLeft(s, " \t\r\n")
	j := 0
	for j < len(t) && isWordByte(t[j]) {
		j++
	}
	if j == 0 {
		return "", "", false
	}
	k := j
	for k < len(t) && (t[k] == ' ' || t[k] == '\t' || t[k] == '\r' || t[k] == '\n') {
		k++
	}
	if k >= len(t) || t[k] != '=' || (k+1 < len(t) && t[k+1] == '=') {
		return "", "", false
	}
	cut := len(s) - len(t) + k
	return s[:cut], s[cut+1:], true
}

// matchBracket returns the index of the bracket closing the one at s[i],
// or -1.
func matchBracket(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			i = skipString(s, i) - 1
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// skipString returns the index just past the string literal starting at
// s[i] (or len(s) when it is not closed).
func skipString(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			return j + 1
		}
	}
	return len(s)
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}
