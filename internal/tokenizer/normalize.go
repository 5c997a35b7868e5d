package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a text segment before pre-tokenization.
type normalizer interface {
	normalize(s string) string
}

type normalizerFunc func(string) string

func (f normalizerFunc) normalize(s string) string { return f(s) }

type normalizerSeq []normalizer

func (q normalizerSeq) normalize(s string) string {
	for _, n := range q {
		s = n.normalize(s)
	}
	return s
}

type rawNormalizer struct {
	Type        string            `json:"type"`
	Normalizers []json.RawMessage `json:"normalizers"`
	Prepend     string            `json:"prepend"`
	Pattern     json.RawMessage   `json:"pattern"`
	Content     string            `json:"content"`
	Left        *bool             `json:"left"`
	Right       *bool             `json:"right"`
}

// parseNormalizer builds a normalizer from its tokenizer.json form; a JSON
// null gives nil (no normalization).
func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r rawNormalizer
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch r.Type {
	case "Sequence":
		var seq normalizerSeq
		for _, sub := range r.Normalizers {
			n, err := parseNormalizer(sub)
			if err != nil {
				return nil, err
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		return seq, nil
	case "NFC":
		return normalizerFunc(norm.NFC.String), nil
	case "NFD":
		return normalizerFunc(norm.NFD.String), nil
	case "NFKC":
		return normalizerFunc(norm.NFKC.String), nil
	case "NFKD":
		return normalizerFunc(norm.NFKD.String), nil
	case "Lowercase":
		return normalizerFunc(strings.ToLower), nil
	case "Prepend":
		p := r.Prepend
		return normalizerFunc(func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}), nil
	case "Replace":
		pat, err := parsePattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		content := r.Content
		return normalizerFunc(func(s string) string { return pat.replaceAll(s, content) }), nil
	case "Strip":
		left, right := r.Left == nil || *r.Left, r.Right == nil || *r.Right
		return normalizerFunc(func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}), nil
	}
	return nil, &UnsupportedError{Component: "normalizer", Type: r.Type}
}

// isNull reports whether raw is absent, blank or JSON null (without copying
// raw, which may be a large part of a tokenizer.json).
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}
