package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"
)

// bpe is a byte-pair-encoding model with merges applied by rank.
type bpe struct {
	vocab       map[string]int
	merges      map[uint64]merge // key: left<<32 | right
	unk         int              // -1 when there is no unk token
	fuseUnk     bool
	byteFall    bool
	ignoreMerge bool
	prefix      string // continuing_subword_prefix
	suffix      string // end_of_word_suffix
	byteTok     [256]int

	mu    sync.RWMutex
	cache map[string][]int
}

type merge struct {
	rank int
	id   int
}

// cacheCap bounds the per-word cache, like tokenizers' 10,000-entry cache.
const cacheCap = 10000

// maxCachedWord keeps very long words (runs of one character) out of the cache.
const maxCachedWord = 256

type rawBPE struct {
	Type        string            `json:"type"`
	RawVocab    json.RawMessage   `json:"vocab"` // decoded into Vocab for BPE only
	Vocab       map[string]int    `json:"-"`
	Merges      []json.RawMessage `json:"merges"`
	mergesJSON  []byte            // the raw merges array; when set, used instead of Merges
	UnkToken    *string           `json:"unk_token"`
	FuseUnk     bool              `json:"fuse_unk"`
	ByteFall    bool              `json:"byte_fallback"`
	IgnoreMerge bool              `json:"ignore_merges"`
	Prefix      *string           `json:"continuing_subword_prefix"`
	Suffix      *string           `json:"end_of_word_suffix"`
	Dropout     *float64          `json:"dropout"`
}

func parseBPE(r *rawBPE) (*bpe, error) {
	if len(r.Vocab) == 0 {
		return nil, fmt.Errorf("model BPE: empty vocab")
	}
	if r.Dropout != nil && *r.Dropout != 0 {
		return nil, &UnsupportedError{Component: "model BPE dropout", Type: fmt.Sprint(*r.Dropout)}
	}
	m := &bpe{
		vocab:       r.Vocab,
		merges:      make(map[uint64]merge, len(r.Merges)),
		unk:         -1,
		fuseUnk:     r.FuseUnk,
		byteFall:    r.ByteFall,
		ignoreMerge: r.IgnoreMerge,
		cache:       make(map[string][]int),
	}
	for tok, id := range r.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("model BPE: token %q has negative id %d", tok, id)
		}
	}
	if r.Prefix != nil {
		m.prefix = *r.Prefix
	}
	if r.Suffix != nil {
		m.suffix = *r.Suffix
	}
	if r.UnkToken != nil {
		id, ok := r.Vocab[*r.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model BPE: unk_token %q not in vocab", *r.UnkToken)
		}
		m.unk = id
	}
	for b := 0; b < 256; b++ {
		m.byteTok[b] = -1
		if id, ok := r.Vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteTok[b] = id
		}
	}
	if r.mergesJSON != nil {
		res, err := resolveMergesJSON(r.mergesJSON, r.Vocab, m.prefix)
		if err != nil {
			return nil, fmt.Errorf("model BPE: %w", err)
		}
		// Inserted from the last rank down, so a pair listed twice keeps
		// its first (lowest) rank with one map operation per merge.
		m.merges = make(map[uint64]merge, len(res))
		for rank := len(res) - 1; rank >= 0; rank-- {
			m.merges[res[rank].key] = merge{rank: rank, id: int(res[rank].id)}
		}
		return m, nil
	}
	var joined []byte
	for rank, raw := range r.Merges {
		a, b, err := parseMerge(raw)
		if err != nil {
			return nil, fmt.Errorf("model BPE: merge %d: %w", rank, err)
		}
		rm, err := resolveMerge(rank, []byte(a), []byte(b), r.Vocab, m.prefix, &joined)
		if err != nil {
			return nil, fmt.Errorf("model BPE: %w", err)
		}
		if _, dup := m.merges[rm.key]; !dup {
			m.merges[rm.key] = merge{rank: rank, id: int(rm.id)}
		}
	}
	return m, nil
}

// resolvedMerge is a merge as ids: key is left<<32 | right.
type resolvedMerge struct {
	key uint64
	id  int32
}

// resolveMerge looks up the ids of a merge's two tokens and of their
// concatenation (the right one without continuing_subword_prefix). joined
// is scratch space.
func resolveMerge(rank int, a, b []byte, vocab map[string]int, prefix string, joined *[]byte) (resolvedMerge, error) {
	// string(x) in a map index does not allocate.
	ida, oka := vocab[string(a)]
	idb, okb := vocab[string(b)]
	if !oka || !okb {
		return resolvedMerge{}, fmt.Errorf("merge %d (%q %q): token not in vocab", rank, a, b)
	}
	rest := b
	if prefix != "" && bytes.HasPrefix(rest, []byte(prefix)) {
		rest = rest[len(prefix):]
	}
	j := append(append((*joined)[:0], a...), rest...)
	*joined = j
	id, ok := vocab[string(j)]
	if !ok {
		return resolvedMerge{}, fmt.Errorf("merge %d (%q %q): result %q not in vocab", rank, a, b, j)
	}
	return resolvedMerge{key: uint64(ida)<<32 | uint64(idb), id: int32(id)}, nil
}

// parallelMerges is the number of merges above which resolveMergesJSON
// splits the work between goroutines.
const parallelMerges = 1 << 15

// resolveMergesJSON parses and resolves a JSON array of merges, in rank
// order. The map lookups dominate loading a large tokenizer, so contiguous
// rank ranges are resolved by up to GOMAXPROCS goroutines; the result (and
// the error reported, that of the lowest bad rank) does not depend on how
// many run.
func resolveMergesJSON(data []byte, vocab map[string]int, prefix string) ([]resolvedMerge, error) {
	offs, err := mergeOffsets(data)
	if err != nil {
		return nil, err
	}
	res := make([]resolvedMerge, len(offs))
	workers := 1
	if len(offs) > parallelMerges {
		workers = min(runtime.GOMAXPROCS(0), 8, len(offs)/parallelMerges)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := len(offs)*w/workers, len(offs)*(w+1)/workers
		wg.Go(func() {
			var joined []byte
			for rank := lo; rank < hi; rank++ {
				a, b, err := mergeAt(data, offs[rank])
				if err == nil {
					res[rank], err = resolveMerge(rank, a, b, vocab, prefix, &joined)
				} else {
					err = fmt.Errorf("merge %d: %w", rank, err)
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// parseMerge accepts both merge encodings: "a b" and ["a", "b"].
func parseMerge(raw json.RawMessage) (string, string, error) {
	raw = trimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		s, rest, ok := jsonString(raw)
		if !ok || len(trimSpace(rest)) != 0 {
			return "", "", fmt.Errorf("malformed merge %s", raw)
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return "", "", fmt.Errorf("malformed merge %q", s)
		}
		return a, b, nil
	}
	if len(raw) > 0 && raw[0] == '[' {
		rest := trimSpace(raw[1:])
		a, rest, ok1 := jsonString(rest)
		rest = trimSpace(rest)
		if ok1 && len(rest) > 0 && rest[0] == ',' {
			b, rest, ok2 := jsonString(trimSpace(rest[1:]))
			rest = trimSpace(rest)
			if ok2 && len(rest) == 1 && rest[0] == ']' {
				return a, b, nil
			}
		}
	}
	return "", "", fmt.Errorf("malformed merge %s", raw)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// jsonString reads one JSON string literal from the start of b and returns
// its value and the bytes after it. Strings without escapes take a fast
// path; the rest go through encoding/json.
func jsonString(b []byte) (string, []byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	escaped := false
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			if !escaped {
				return string(b[1:i]), b[i+1:], true
			}
			var s string
			if err := json.Unmarshal(b[:i+1], &s); err != nil {
				return "", nil, false
			}
			return s, b[i+1:], true
		}
	}
	return "", nil, false
}

// encodeWord appends the ids of one pre-token to dst.
func (m *bpe) encodeWord(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if m.ignoreMerge {
		if id, ok := m.vocab[word]; ok {
			return append(dst, id)
		}
	}
	cacheable := len(word) <= maxCachedWord
	if cacheable {
		m.mu.RLock()
		ids, ok := m.cache[word]
		m.mu.RUnlock()
		if ok {
			return append(dst, ids...)
		}
	}
	ids := m.mergeWord(word)
	if cacheable {
		m.mu.Lock()
		if len(m.cache) < cacheCap {
			m.cache[word] = ids
		}
		m.mu.Unlock()
	}
	return append(dst, ids...)
}

// symbol is a node of the doubly linked list of a word being merged.
type symbol struct {
	id         int
	prev, next int
	dead       bool
}

// candidate is a possible merge of the symbol at pos with its successor.
// key orders candidates: rank first, then position (leftmost wins ties).
type candidate struct {
	key         uint64 // rank<<32 | pos
	id          int    // merged token
	left, right int    // ids at push time, to detect stale entries
}

// candHeap is a binary min-heap of candidates by key (a typed heap: the
// container/heap interface calls dominate on long words).
type candHeap []candidate

func (h *candHeap) push(c candidate) {
	*h = append(*h, c)
	q := *h
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if q[p].key <= q[i].key {
			break
		}
		q[p], q[i] = q[i], q[p]
		i = p
	}
}

func (h *candHeap) pop() candidate {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q = q[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(q) {
			break
		}
		m := l
		if r := l + 1; r < len(q) && q[r].key < q[l].key {
			m = r
		}
		if q[i].key <= q[m].key {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}

// initialSymbols splits a word into per-character ids, applying
// continuing_subword_prefix, end_of_word_suffix, byte fallback and unk.
func (m *bpe) initialSymbols(word string) []symbol {
	syms := make([]symbol, 0, utf8.RuneCountInString(word))
	add := func(id int) {
		syms = append(syms, symbol{id: id, prev: len(syms) - 1, next: len(syms) + 1})
	}
	pendingUnk := false
	flushUnk := func() {
		if pendingUnk {
			add(m.unk)
			pendingUnk = false
		}
	}
	for i, r := range word {
		size := utf8.RuneLen(r)
		if size < 0 {
			size = 1
		}
		s := word[i : i+size]
		if i > 0 && m.prefix != "" {
			s = m.prefix + s
		}
		if i+size == len(word) && m.suffix != "" {
			s += m.suffix
		}
		if id, ok := m.vocab[s]; ok {
			flushUnk()
			add(id)
			continue
		}
		if m.byteFall {
			raw := word[i : i+size]
			ok := true
			for k := 0; k < len(raw); k++ {
				if m.byteTok[raw[k]] < 0 {
					ok = false
					break
				}
			}
			if ok {
				flushUnk()
				for k := 0; k < len(raw); k++ {
					add(m.byteTok[raw[k]])
				}
				continue
			}
		}
		if m.unk >= 0 {
			if pendingUnk && !m.fuseUnk {
				flushUnk()
			}
			pendingUnk = true
		}
		// No unk token: the character is dropped, as in tokenizers.
	}
	flushUnk()
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// mergeWord runs the BPE merges on one word: repeatedly merge the adjacent
// pair of lowest rank (leftmost first) until no pair has a merge.
func (m *bpe) mergeWord(word string) []int {
	syms := m.initialSymbols(word)
	h := make(candHeap, 0, len(syms))
	pushPair := func(pos int) {
		l, r := syms[pos].id, syms[syms[pos].next].id
		if mg, ok := m.merges[uint64(l)<<32|uint64(r)]; ok {
			h.push(candidate{key: uint64(mg.rank)<<32 | uint64(pos), id: mg.id, left: l, right: r})
		}
	}
	for i := 0; i+1 < len(syms); i++ {
		pushPair(i)
	}
	for len(h) > 0 {
		c := h.pop()
		pos := int(c.key & 0xFFFFFFFF)
		s := &syms[pos]
		if s.dead || s.id != c.left || s.next < 0 {
			continue
		}
		nx := &syms[s.next]
		if nx.id != c.right {
			continue
		}
		s.id = c.id
		nx.dead = true
		s.next = nx.next
		if s.next >= 0 {
			syms[s.next].prev = pos
		}
		if s.prev >= 0 {
			pushPair(s.prev)
		}
		if s.next >= 0 {
			pushPair(pos)
		}
	}
	ids := make([]int, 0, len(syms))
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		ids = append(ids, syms[i].id)
	}
	return ids
}
