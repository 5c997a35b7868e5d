package tokenizer

import "strings"

// StreamDecoder turns generated ids into text incrementally. Add returns
// text only once it is complete: a byte-level token that ends inside a
// multi-byte UTF-8 character, or a run of <0xNN> byte tokens, is held back
// until the character is finished. Decoders that depend on context (such as
// the SentencePiece space handling) see the previous tokens, so the pieces
// concatenate to exactly Decode(all ids).
type StreamDecoder struct {
	t         *Tokenizer
	skip      bool
	ids       []int  // context ids followed by pending ids
	prefixLen int    // how many of ids are context
	prefix    string // Decode(ids[:prefixLen])
}

// NewStreamDecoder returns a streaming decoder; skipSpecial is passed to
// Decode.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skip: skipSpecial}
}

// Add feeds one id and returns the newly completed text, or "" if there is
// none yet.
func (d *StreamDecoder) Add(id int) string {
	d.ids = append(d.ids, id)
	text := d.t.Decode(d.ids, d.skip)
	if len(text) <= len(d.prefix) || strings.HasSuffix(text, "\uFFFD") || !strings.HasPrefix(text, d.prefix) {
		return ""
	}
	out := text[len(d.prefix):]
	// The newly decoded ids become the context for the next step.
	d.ids = d.ids[d.prefixLen:]
	d.prefixLen = len(d.ids)
	d.prefix = d.t.Decode(d.ids, d.skip)
	return out
}

// Flush returns any held-back text (incomplete characters come out as
// U+FFFD) and resets the decoder.
func (d *StreamDecoder) Flush() string {
	text := d.t.Decode(d.ids, d.skip)
	out := ""
	if len(text) > len(d.prefix) && strings.HasPrefix(text, d.prefix) {
		out = text[len(d.prefix):]
	}
	d.ids, d.prefixLen, d.prefix = nil, 0, ""
	return out
}
