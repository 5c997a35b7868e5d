package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// A tokenizer.json is mostly its model's vocabulary and merges (Gemma 3:
// 33 MB, 262,144 entries and 514,906 merges). encoding/json decodes them
// through reflection and validates the whole file before decoding it, which
// dominates Load, so the file is split with the small scanner below: the
// top-level object and the model object are cut into their members, the
// vocabulary and merges are read by strict hand-written parsers, and every
// other member that is used goes through encoding/json as before. Members
// that are not used ("version", "truncation", ...) are skipped without
// being validated.

var errTruncated = errors.New("unexpected end of JSON input")

// syntaxError reports malformed JSON at byte offset off.
func syntaxError(off int, what string) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", off, what)
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && isJSONSpace(b[i]) {
		i++
	}
	return i
}

// scanString reads the string literal starting at b[i] (a '"'). It returns
// the bytes between the quotes, whether they hold an escape, and the index
// after the closing quote.
func scanString(b []byte, i int) (body []byte, escaped bool, next int, err error) {
	if i >= len(b) || b[i] != '"' {
		return nil, false, i, syntaxError(i, "want a string")
	}
	for j := i + 1; j < len(b); {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			break
		}
		q := j + k
		// The quote closes the string unless an odd run of backslashes
		// precedes it.
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 1 {
			escaped = true
			j = q + 1
			continue
		}
		body = b[i+1 : q]
		if !escaped && bytes.IndexByte(body, '\\') >= 0 {
			escaped = true
		}
		for p, c := range body {
			if c < 0x20 {
				return nil, false, i + 1 + p, syntaxError(i+1+p, "control character in string")
			}
		}
		return body, escaped, q + 1, nil
	}
	return nil, false, len(b), errTruncated
}

// stringValue returns the value of a scanned string literal: the body itself
// when it has no escape and is valid UTF-8, else what encoding/json makes of
// the literal (so escapes and invalid UTF-8 are handled exactly as before).
// The result may alias b.
func stringValue(b []byte, start, next int, body []byte, escaped bool) ([]byte, error) {
	if !escaped && utf8.Valid(body) {
		return body, nil
	}
	var s string
	if err := json.Unmarshal(b[start:next], &s); err != nil {
		return nil, fmt.Errorf("string at byte %d: %w", start, err)
	}
	return []byte(s), nil
}

// readString scans and decodes the string literal at b[i].
func readString(b []byte, i int) ([]byte, int, error) {
	body, esc, next, err := scanString(b, i)
	if err != nil {
		return nil, next, err
	}
	v, err := stringValue(b, i, next, body, esc)
	return v, next, err
}

// skipValue returns the index just past the JSON value starting at b[i].
// Nested containers are matched by their brackets (strings skipped) but not
// otherwise checked.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, errTruncated
	}
	switch b[i] {
	case '"':
		_, _, next, err := scanString(b, i)
		return next, err
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				_, _, next, err := scanString(b, j)
				if err != nil {
					return next, err
				}
				j = next - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return len(b), errTruncated
	}
	j := i
	for j < len(b) && !isJSONSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
		j++
	}
	if j == i {
		return i, syntaxError(i, fmt.Sprintf("unexpected %q", b[i]))
	}
	return j, nil
}

// splitObject cuts the JSON object b into its members (key → raw value,
// aliasing b; a repeated key keeps its last value, as encoding/json does).
// Nothing but whitespace may follow the object.
func splitObject(b []byte) (map[string][]byte, error) {
	members := map[string][]byte{}
	i := skipJSONSpace(b, 0)
	if i >= len(b) {
		return nil, errTruncated
	}
	if b[i] != '{' {
		return nil, syntaxError(i, "want an object")
	}
	i = skipJSONSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			key, next, err := readString(b, i)
			if err != nil {
				return nil, err
			}
			i = skipJSONSpace(b, next)
			if i >= len(b) {
				return nil, errTruncated
			}
			if b[i] != ':' {
				return nil, syntaxError(i, "want ':'")
			}
			i = skipJSONSpace(b, i+1)
			end, err := skipValue(b, i)
			if err != nil {
				return nil, err
			}
			members[string(key)] = b[i:end]
			i = skipJSONSpace(b, end)
			if i >= len(b) {
				return nil, errTruncated
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return nil, syntaxError(i, "want ',' or '}'")
			}
			i = skipJSONSpace(b, i+1)
		}
	}
	if i = skipJSONSpace(b, i); i != len(b) {
		return nil, syntaxError(i, "data after the object")
	}
	return members, nil
}

// parseVocab reads a BPE vocabulary {"token": id, ...}. All token strings
// share one backing string.
func parseVocab(b []byte) (map[string]int, error) {
	type entry struct {
		off, end int
		id       int
	}
	entries := make([]entry, 0, bytes.Count(b, []byte(`":`)))
	keys := make([]byte, 0, len(b)/2)
	i := skipJSONSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, syntaxError(i, "vocab: want an object")
	}
	i = skipJSONSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			key, next, err := readString(b, i)
			if err != nil {
				return nil, fmt.Errorf("vocab: %w", err)
			}
			i = skipJSONSpace(b, next)
			if i >= len(b) || b[i] != ':' {
				return nil, syntaxError(i, "vocab: want ':'")
			}
			i = skipJSONSpace(b, i+1)
			j := i
			if j < len(b) && b[j] == '-' {
				j++
			}
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			id, err := strconv.Atoi(string(b[i:j]))
			if err != nil {
				return nil, syntaxError(i, "vocab: want an integer id")
			}
			entries = append(entries, entry{off: len(keys), end: len(keys) + len(key), id: id})
			keys = append(keys, key...)
			i = skipJSONSpace(b, j)
			if i >= len(b) {
				return nil, errTruncated
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return nil, syntaxError(i, "vocab: want ',' or '}'")
			}
			i = skipJSONSpace(b, i+1)
		}
	}
	if i != len(b) {
		return nil, syntaxError(i, "vocab: data after the object")
	}
	all := string(keys)
	vocab := make(map[string]int, len(entries))
	for _, e := range entries {
		vocab[all[e.off:e.end]] = e.id
	}
	return vocab, nil
}

// mergeOffsets returns the offset in b of each element of the JSON array
// of merges b.
func mergeOffsets(b []byte) ([]int, error) {
	offs := make([]int, 0, bytes.Count(b, []byte{','})+1)
	i := skipJSONSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, syntaxError(i, "merges: want an array")
	}
	i = skipJSONSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for {
			end, err := skipValue(b, i)
			if err != nil {
				return nil, fmt.Errorf("merges: %w", err)
			}
			offs = append(offs, i)
			i = skipJSONSpace(b, end)
			if i >= len(b) {
				return nil, errTruncated
			}
			if b[i] == ']' {
				i++
				break
			}
			if b[i] != ',' {
				return nil, syntaxError(i, "merges: want ',' or ']'")
			}
			i = skipJSONSpace(b, i+1)
		}
	}
	if i = skipJSONSpace(b, i); i != len(b) {
		return nil, syntaxError(i, "merges: data after the array")
	}
	return offs, nil
}

// mergeAt reads the merge at b[i], in either encoding ("a b" or ["a",
// "b"]), with the rules of parseMerge. The results may alias b.
func mergeAt(b []byte, i int) (left, right []byte, err error) {
	malformed := func() error {
		end, _ := skipValue(b, i)
		return fmt.Errorf("malformed merge %s", b[i:max(end, i)])
	}
	if i >= len(b) {
		return nil, nil, errTruncated
	}
	switch b[i] {
	case '"':
		s, _, err := readString(b, i)
		if err != nil {
			return nil, nil, err
		}
		k := bytes.IndexByte(s, ' ')
		if k <= 0 || k == len(s)-1 || bytes.IndexByte(s[k+1:], ' ') >= 0 {
			return nil, nil, malformed()
		}
		return s[:k], s[k+1:], nil
	case '[':
		j := skipJSONSpace(b, i+1)
		if left, j, err = readString(b, j); err != nil {
			return nil, nil, malformed()
		}
		if j = skipJSONSpace(b, j); j >= len(b) || b[j] != ',' {
			return nil, nil, malformed()
		}
		if right, j, err = readString(b, skipJSONSpace(b, j+1)); err != nil {
			return nil, nil, malformed()
		}
		if j = skipJSONSpace(b, j); j >= len(b) || b[j] != ']' {
			return nil, nil, malformed()
		}
		return left, right, nil
	}
	return nil, nil, malformed()
}
