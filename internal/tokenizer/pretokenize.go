package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// piece is a pre-token in flight. atStart is true only for the piece that
// begins at offset 0 of the original input (Metaspace's "first" scheme).
type piece struct {
	text    string
	atStart bool
}

// preTokenizer splits pieces into smaller pieces, possibly rewriting them.
type preTokenizer interface {
	preTokenize(in []piece) []piece
}

type preTokenizerSeq []preTokenizer

func (q preTokenizerSeq) preTokenize(in []piece) []piece {
	for _, p := range q {
		in = p.preTokenize(in)
	}
	return in
}

// gpt2Pattern is the regex of the ByteLevel pre-tokenizer's use_regex.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

type rawPreTokenizer struct {
	Type             string            `json:"type"`
	PreTokenizers    []json.RawMessage `json:"pretokenizers"`
	AddPrefixSpace   *bool             `json:"add_prefix_space"`
	UseRegex         *bool             `json:"use_regex"`
	Pattern          json.RawMessage   `json:"pattern"`
	Behavior         string            `json:"behavior"`
	Invert           bool              `json:"invert"`
	Replacement      string            `json:"replacement"`
	PrependScheme    string            `json:"prepend_scheme"`
	Split            *bool             `json:"split"`
	IndividualDigits bool              `json:"individual_digits"`
}

func parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r rawPreTokenizer
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	switch r.Type {
	case "Sequence":
		var seq preTokenizerSeq
		for _, sub := range r.PreTokenizers {
			p, err := parsePreTokenizer(sub)
			if err != nil {
				return nil, err
			}
			if p != nil {
				seq = append(seq, p)
			}
		}
		return seq, nil
	case "ByteLevel":
		bl := &byteLevelPre{addPrefixSpace: r.AddPrefixSpace != nil && *r.AddPrefixSpace}
		if r.UseRegex == nil || *r.UseRegex {
			p, err := parsePattern(json.RawMessage(fmt.Sprintf(`{"Regex":%q}`, gpt2Pattern)))
			if err != nil {
				return nil, err
			}
			bl.split = &splitPre{pat: p, behavior: "Isolated"}
		}
		return bl, nil
	case "Split":
		p, err := parsePattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		switch r.Behavior {
		case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		default:
			return nil, &UnsupportedError{Component: "pre_tokenizer Split behavior", Type: r.Behavior}
		}
		return &splitPre{pat: p, behavior: r.Behavior, invert: r.Invert}, nil
	case "Metaspace":
		rep := r.Replacement
		if rep == "" {
			rep = "▁"
		}
		scheme := r.PrependScheme
		if scheme == "" {
			scheme = "always"
			if r.AddPrefixSpace != nil && !*r.AddPrefixSpace {
				scheme = "never"
			}
		}
		switch scheme {
		case "always", "first", "never":
		default:
			return nil, &UnsupportedError{Component: "pre_tokenizer Metaspace prepend_scheme", Type: scheme}
		}
		return &metaspacePre{rep: rep, scheme: scheme, split: r.Split == nil || *r.Split}, nil
	case "Digits":
		return digitsPre{individual: r.IndividualDigits}, nil
	case "WhitespaceSplit":
		return whitespaceSplitPre{}, nil
	case "Whitespace":
		p, err := parsePattern(json.RawMessage(`{"Regex":"\\w+|[^\\w\\s]+"}`))
		if err != nil {
			return nil, err
		}
		return &splitPre{pat: p, behavior: "Removed", invert: true}, nil
	}
	return nil, &UnsupportedError{Component: "pre_tokenizer", Type: r.Type}
}

// byteLevelPre is the ByteLevel pre-tokenizer: optional prefix space,
// optional GPT-2 regex split, then bytes mapped to the byte-level alphabet.
type byteLevelPre struct {
	addPrefixSpace bool
	split          *splitPre
}

func (b *byteLevelPre) preTokenize(in []piece) []piece {
	if b.addPrefixSpace {
		for i := range in {
			if !strings.HasPrefix(in[i].text, " ") {
				in[i].text = " " + in[i].text
			}
		}
	}
	if b.split != nil {
		in = b.split.preTokenize(in)
	}
	for i := range in {
		in[i].text = byteLevelEncode(in[i].text)
	}
	return in
}

// splitPre is the Split pre-tokenizer.
type splitPre struct {
	pat      *pattern
	behavior string
	invert   bool
}

type seg struct {
	start, end int
	match      bool
}

func (s *splitPre) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		for k, sg := range s.segments(p.text) {
			if sg.start == sg.end {
				continue
			}
			out = append(out, piece{text: p.text[sg.start:sg.end], atStart: p.atStart && k == 0 && sg.start == 0})
		}
	}
	return out
}

// segments splits text into matched and unmatched ranges and combines them
// according to the behavior, following tokenizers' NormalizedString::split.
func (s *splitPre) segments(text string) []seg {
	var all []seg
	prev := 0
	for _, m := range s.pat.findAll(text) {
		if m.start > prev {
			all = append(all, seg{prev, m.start, false})
		}
		all = append(all, seg{m.start, m.end, true})
		prev = m.end
	}
	if prev < len(text) {
		all = append(all, seg{prev, len(text), false})
	}
	if s.invert {
		for i := range all {
			all[i].match = !all[i].match
		}
	}
	var out []seg
	switch s.behavior {
	case "Isolated":
		out = all
	case "Removed":
		for _, sg := range all {
			if !sg.match {
				out = append(out, sg)
			}
		}
	case "MergedWithPrevious":
		prevMatch := false
		for _, sg := range all {
			if sg.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].end = sg.end
			} else {
				out = append(out, seg{sg.start, sg.end, false})
			}
			prevMatch = sg.match
		}
	case "MergedWithNext":
		prevMatch := false
		for i := len(all) - 1; i >= 0; i-- {
			sg := all[i]
			if sg.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = sg.start
			} else {
				out = append(out, seg{sg.start, sg.end, false})
			}
			prevMatch = sg.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case "Contiguous":
		prevMatch := false
		for i, sg := range all {
			if i > 0 && sg.match == prevMatch {
				out[len(out)-1].end = sg.end
			} else {
				out = append(out, seg{sg.start, sg.end, false})
			}
			prevMatch = sg.match
		}
	}
	return out
}

// metaspacePre is the Metaspace pre-tokenizer (SentencePiece style).
type metaspacePre struct {
	rep    string
	scheme string
	split  bool
}

func (m *metaspacePre) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		t := strings.ReplaceAll(p.text, " ", m.rep)
		if !strings.HasPrefix(t, m.rep) && (m.scheme == "always" || (m.scheme == "first" && p.atStart)) {
			t = m.rep + t
		}
		if !m.split {
			out = append(out, piece{text: t, atStart: p.atStart})
			continue
		}
		// MergedWithNext on the replacement: every occurrence starts a piece.
		start := 0
		for off := 0; off < len(t); {
			i := strings.Index(t[off:], m.rep)
			if i < 0 {
				break
			}
			if cut := off + i; cut > start {
				out = append(out, piece{text: t[start:cut], atStart: p.atStart && start == 0})
				start = cut
			}
			off += i + len(m.rep)
		}
		if start < len(t) {
			out = append(out, piece{text: t[start:], atStart: p.atStart && start == 0})
		}
	}
	return out
}

// digitsPre is the Digits pre-tokenizer.
type digitsPre struct{ individual bool }

func (d digitsPre) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		start := 0
		prevDigit := false
		emit := func(end int) {
			if end > start {
				out = append(out, piece{text: p.text[start:end], atStart: p.atStart && start == 0})
			}
			start = end
		}
		for i, r := range p.text {
			isDigit := unicode.IsNumber(r)
			if i > 0 && (isDigit != prevDigit || (isDigit && d.individual)) {
				emit(i)
			}
			prevDigit = isDigit
		}
		emit(len(p.text))
	}
	return out
}

// whitespaceSplitPre splits on Unicode whitespace, dropping it.
type whitespaceSplitPre struct{}

func (whitespaceSplitPre) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		for k, f := range strings.FieldsFunc(p.text, unicode.IsSpace) {
			out = append(out, piece{text: f, atStart: p.atStart && k == 0 && strings.HasPrefix(p.text, f)})
		}
	}
	return out
}
