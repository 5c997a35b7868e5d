package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns a list of token strings into text pieces (tokenizers'
// decode_chain); the pieces are concatenated at the end.
type decoder interface {
	decodeChain(tokens []string) []string
}

type decoderSeq []decoder

func (q decoderSeq) decodeChain(tokens []string) []string {
	for _, d := range q {
		tokens = d.decodeChain(tokens)
	}
	return tokens
}

type rawDecoder struct {
	Type           string            `json:"type"`
	Decoders       []json.RawMessage `json:"decoders"`
	Pattern        json.RawMessage   `json:"pattern"`
	Content        string            `json:"content"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	Replacement    string            `json:"replacement"`
	PrependScheme  string            `json:"prepend_scheme"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
}

func parseDecoder(raw json.RawMessage) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r rawDecoder
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	switch r.Type {
	case "Sequence":
		var seq decoderSeq
		for _, sub := range r.Decoders {
			d, err := parseDecoder(sub)
			if err != nil {
				return nil, err
			}
			if d != nil {
				seq = append(seq, d)
			}
		}
		return seq, nil
	case "ByteLevel":
		return byteLevelDec{}, nil
	case "Replace":
		p, err := parsePattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("decoder Replace: %w", err)
		}
		return replaceDec{pat: p, content: r.Content}, nil
	case "ByteFallback":
		return byteFallbackDec{}, nil
	case "Fuse":
		return fuseDec{}, nil
	case "Strip":
		if len(r.Content) == 0 || utf8.RuneCountInString(r.Content) != 1 {
			return nil, fmt.Errorf("decoder Strip: content %q is not one character", r.Content)
		}
		c, _ := utf8.DecodeRuneInString(r.Content)
		return stripDec{content: c, start: r.Start, stop: r.Stop}, nil
	case "Metaspace":
		rep := r.Replacement
		if rep == "" {
			rep = "▁"
		}
		strip := r.PrependScheme != "never"
		if r.PrependScheme == "" && r.AddPrefixSpace != nil {
			strip = *r.AddPrefixSpace
		}
		return metaspaceDec{rep: rep, stripFirst: strip}, nil
	}
	return nil, &UnsupportedError{Component: "decoder", Type: r.Type}
}

// byteLevelDec maps byte-level runes back to bytes. A token holding a rune
// outside the alphabet (an added token, say) contributes its UTF-8 as is.
type byteLevelDec struct{}

func (byteLevelDec) decodeChain(tokens []string) []string {
	var buf []byte
	for _, t := range tokens {
		mark := len(buf)
		ok := true
		for _, r := range t {
			b, found := byteOfRune(r)
			if !found {
				ok = false
				break
			}
			buf = append(buf, b)
		}
		if !ok {
			buf = append(buf[:mark], t...)
		}
	}
	return []string{lossyUTF8(buf)}
}

type replaceDec struct {
	pat     *pattern
	content string
}

func (d replaceDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i] = d.pat.replaceAll(t, d.content)
	}
	return out
}

// byteFallbackDec turns runs of <0xNN> tokens into text; a run that is not
// valid UTF-8 becomes one U+FFFD per byte.
type byteFallbackDec struct{}

func parseByteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

func (byteFallbackDec) decodeChain(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range tokens {
		if b, ok := parseByteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

type fuseDec struct{}

func (fuseDec) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

// stripDec removes up to start leading and stop trailing copies of content
// from every token.
type stripDec struct {
	content     rune
	start, stop int
}

func (d stripDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		for k := 0; k < d.start && strings.HasPrefix(t, string(d.content)); k++ {
			t = t[utf8.RuneLen(d.content):]
		}
		for k := 0; k < d.stop && strings.HasSuffix(t, string(d.content)); k++ {
			t = t[:len(t)-utf8.RuneLen(d.content)]
		}
		out[i] = t
	}
	return out
}

// metaspaceDec replaces the metaspace with a space and drops the leading
// space of the first token.
type metaspaceDec struct {
	rep        string
	stripFirst bool
}

func (d metaspaceDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		t = strings.ReplaceAll(t, d.rep, " ")
		if i == 0 && d.stripFirst {
			t = strings.TrimPrefix(t, " ")
		}
		out[i] = t
	}
	return out
}
