// Package calib collects the activation statistics that calibrated
// palettization (quant.PalettizeCalibrated) minimises the output error
// on: a calibration text is tokenized with the checkpoint's tokenizer, cut
// into sequences of the context length and run through the reference
// forward pass; for every linear layer the Gram matrix H = XᵀX of its
// inputs is accumulated in float64 (its diagonal only beyond a width limit,
// so memory stays bounded), for the LM head that of the final-norm
// outputs, for the embedding table the token frequencies.
//
// Everything is deterministic: the same text, model and options give the
// same statistics bit for bit.
package calib

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/tokenizer"
)

// DefaultTokens is the default number of calibration tokens.
const DefaultTokens = 4096

// DefaultFullLimit is the widest input that gets a full Gram matrix
// (4096² float64 = 128 MiB) when Options.Full is nil; wider inputs keep the
// diagonal only. The pipeline narrows it to the widths some weight can
// afford (pipeline.fullWidths).
const DefaultFullLimit = 4096

// Options configure Collect.
type Options struct {
	// ContextLength is the sequence length the text is cut into.
	ContextLength int
	// Tokens caps the tokens used (0: DefaultTokens); only whole
	// sequences are used.
	Tokens int
	// Full decides which input widths get a full Gram matrix (the others
	// keep the diagonal); nil: widths up to DefaultFullLimit.
	Full func(in int) bool
}

// Text is a calibration text read from a file.
type Text struct {
	Path   string
	Data   []byte
	SHA256 string // hex SHA-256 of Data
}

// ReadText reads a UTF-8 calibration file; empty, unreadable or non-UTF-8
// files are errors naming the file.
func ReadText(path string) (*Text, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("calib: read calibration text: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("calib: calibration text %s is empty; give a file of UTF-8 text", path)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("calib: calibration text %s is not valid UTF-8", path)
	}
	sum := sha256.Sum256(data)
	return &Text{Path: path, Data: data, SHA256: hex.EncodeToString(sum[:])}, nil
}

// Documents splits text in the fortune format: entries separated by lines
// that are exactly "%", each stripped of leading and trailing newlines,
// empty ones dropped. Text without such lines is one document.
func Documents(text string) []string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	var docs []string
	var cur []string
	flush := func() {
		d := strings.Trim(strings.Join(cur, "\n"), "\n")
		if d != "" {
			docs = append(docs, d)
		}
		cur = cur[:0]
	}
	for _, line := range strings.Split(text, "\n") {
		if line == "%" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// Tokenize encodes every document as the model was trained: BOS (if the
// tokenizer has one), the text, EOS (the first EOS id, if any),
// concatenated.
func Tokenize(tok *tokenizer.Tokenizer, text string) []int {
	var ids []int
	eos := tok.EOS()
	for _, d := range Documents(text) {
		ids = append(ids, tok.Encode(d, true)...)
		if len(eos) > 0 {
			ids = append(ids, eos[0])
		}
	}
	return ids
}

// ErrTooShort reports a calibration text shorter than one sequence.
var ErrTooShort = errors.New("calib: calibration text too short")

// Set holds the statistics of one calibration run.
type Set struct {
	// Tokens and Sequences count what was run through the model.
	Tokens, Sequences int
	// SHA256 is the hex digest of the calibration text ("" if unknown).
	SHA256 string

	stats map[string]*quant.Stats // by HF weight name
	freq  []float64               // embedding rows: occurrences + 1
	embed string
}

// Collect runs ids (cut into whole sequences of opts.ContextLength, at
// most opts.Tokens tokens) through ref and returns the statistics.
func Collect(ref *reference.Model, ids []int, opts Options) (*Set, error) {
	if opts.ContextLength <= 0 {
		return nil, fmt.Errorf("calib: context length %d", opts.ContextLength)
	}
	if opts.Tokens == 0 {
		opts.Tokens = DefaultTokens
	}
	n := min(len(ids), opts.Tokens) / opts.ContextLength
	if len(ids) < opts.ContextLength {
		return nil, fmt.Errorf("%w: it gives %d tokens, fewer than one sequence of the context length %d; give more text",
			ErrTooShort, len(ids), opts.ContextLength)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %d calibration tokens allowed, fewer than one sequence of the context length %d; raise --calibration-tokens",
			ErrTooShort, opts.Tokens, opts.ContextLength)
	}
	cfg := ref.Config()
	s := &Set{Tokens: n * opts.ContextLength, Sequences: n, stats: map[string]*quant.Stats{},
		freq: make([]float64, cfg.VocabSize), embed: "model.embed_tokens.weight"}
	full := opts.Full
	if full == nil {
		full = func(in int) bool { return in <= DefaultFullLimit }
	}
	c := newCollector(full)
	ref.Observe(c.observe)
	defer ref.Observe(nil)
	for q := range n {
		seq := ids[q*opts.ContextLength : (q+1)*opts.ContextLength]
		for _, id := range seq {
			if id >= 0 && id < len(s.freq) {
				s.freq[id]++
			}
		}
		if err := ref.Trace(seq); err != nil {
			return nil, fmt.Errorf("calib: sequence %d: %w", q, err)
		}
		if c.err != nil {
			return nil, c.err
		}
	}
	for i := range s.freq {
		s.freq[i]++
	}
	// Requests name weights canonically ("model.layers.…", as the
	// converter does for every layout); the reference observes them under
	// the checkpoint's own prefix (a Gemma 3 text tower's, say).
	prefix := ref.DecoderPrefix()
	for name, a := range c.accs {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			name = "model." + rest
		}
		s.stats[name] = a.owner().stats()
	}
	return s, nil
}

// Stats returns the statistics of the named weight's input (nil if none),
// by canonical name ("model.layers.0.self_attn.q_proj.weight",
// "lm_head.weight") whatever the checkpoint's layout.
func (s *Set) Stats(name string) *quant.Stats { return s.stats[name] }

// Len returns the number of weights with statistics.
func (s *Set) Len() int { return len(s.stats) }

// For returns the statistics for a converter request: the LM head (its
// splits, padded or not, share one H), the embedding table (rows weighted
// by token frequency, channels alike) or a linear layer by name. A request
// for a weight without statistics is an error.
func (s *Set) For(req quant.Request) (*quant.Stats, error) {
	if len(req.Shape) < 2 || req.Shape[0] <= 0 {
		return nil, fmt.Errorf("calib: %s: shape %v", req.Name, req.Shape)
	}
	rows := int(req.Shape[0])
	in := len(req.Weights) / rows
	name := req.Name
	if name == s.embed && len(req.Shape) == 2 {
		// The embedding table as a gather source: row r's error counts as
		// often as token r occurs.
		if req.Row0 != 0 || req.Row1 != 0 || rows != len(s.freq) {
			return nil, fmt.Errorf("calib: embedding %s request rows [%d,%d) shape %v, want the whole [%d, H] table",
				name, req.Row0, req.Row1, req.Shape, len(s.freq))
		}
		ones := make([]float64, in)
		for i := range ones {
			ones[i] = 1
		}
		return &quant.Stats{Diag: ones, RowWeight: s.freq}, nil
	}
	if name == s.embed {
		name = "lm_head.weight" // tied head: its input is the final-norm output
	}
	st := s.stats[name]
	if st == nil {
		return nil, fmt.Errorf("calib: no calibration statistics for weight %s", req.Name)
	}
	if st.In() != in {
		return nil, fmt.Errorf("calib: %s: statistics have %d input channels, weight rows %d", req.Name, st.In(), in)
	}
	return st, nil
}

// accumulator sums one input's Gram matrix (upper triangle while
// collecting) or diagonal.
type accumulator struct {
	n     int
	full  bool
	gram  []float64 // n×n, upper triangle filled
	diag  []float64
	last  []float32 // the last row seen, to detect shared inputs
	alias *accumulator
	st    *quant.Stats
}

func (a *accumulator) owner() *accumulator {
	for a.alias != nil {
		a = a.alias
	}
	return a
}

func (a *accumulator) add(x []float32) {
	copy(a.last, x)
	if !a.full {
		for i, v := range x {
			a.diag[i] += float64(v) * float64(v)
		}
		return
	}
	n := a.n
	for i, v := range x {
		if v == 0 {
			continue
		}
		vi := float64(v)
		row := a.gram[i*n : (i+1)*n]
		for j := i; j < n; j++ {
			row[j] += vi * float64(x[j])
		}
	}
}

// stats finishes the accumulator (mirrors the upper triangle).
func (a *accumulator) stats() *quant.Stats {
	if a.st != nil {
		return a.st
	}
	n := a.n
	st := &quant.Stats{Diag: a.diag}
	if a.full {
		for i := range n {
			a.diag[i] = a.gram[i*n+i]
			for j := i + 1; j < n; j++ {
				a.gram[j*n+i] = a.gram[i*n+j]
			}
		}
		st.Gram = a.gram
	}
	a.st = st
	return st
}

// collector routes observed rows to accumulators. Weights observed with
// exactly the row the previous weight saw (q/k/v, gate/up) share one
// accumulator; later rows are checked to stay identical.
type collector struct {
	full func(in int) bool
	accs map[string]*accumulator
	prev *accumulator
	err  error
}

func newCollector(full func(in int) bool) *collector {
	return &collector{full: full, accs: map[string]*accumulator{}}
}

func (c *collector) observe(name string, x []float32) {
	if c.err != nil {
		return
	}
	a := c.accs[name]
	if a == nil {
		if p := c.prev; p != nil && p.n == len(x) && equal(p.last, x) {
			a = &accumulator{n: len(x), alias: p.owner()}
		} else {
			a = &accumulator{n: len(x), full: c.full(len(x)), diag: make([]float64, len(x)), last: make([]float32, len(x))}
			if a.full {
				a.gram = make([]float64, len(x)*len(x))
			}
		}
		c.accs[name] = a
	}
	if a.n != len(x) {
		c.err = fmt.Errorf("calib: weight %s observed with inputs of width %d and %d", name, a.n, len(x))
		return
	}
	if a.alias != nil {
		o := a.owner()
		if !equal(o.last, x) {
			c.err = fmt.Errorf("calib: weight %s shared its input with another layer once but not always", name)
			return
		}
		c.prev = o
		return
	}
	a.add(x)
	c.prev = a
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(a[i] != a[i] && b[i] != b[i]) {
			return false
		}
	}
	return true
}
