// Package tokenizer reproduces Hugging Face tokenizers for the model families
// anemll converts: byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece
// style BPE with byte fallback (Llama 2, Mistral, Gemma 3). It loads
// tokenizer.json and its companions from a checkpoint directory, encodes and
// decodes text exactly as the tokenizers library does, streams decoded text
// for chat, renders the chat_template of tokenizer_config.json, and decides
// which ids end generation (Tokenizer.EOS).
//
// Decode does not apply transformers' clean_up_tokenization_spaces, matching
// the tokenizers library rather than transformers' post-processing of text.
package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// UnsupportedError reports a tokenizer component type this package does not
// implement.
type UnsupportedError struct {
	Component string // "model", "normalizer", "pre_tokenizer", "decoder", "post_processor", ...
	Type      string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("unsupported %s type %q", e.Component, e.Type)
}

// ErrNoChatTemplate is returned by ApplyChatTemplate when the tokenizer has
// no chat_template and none is given.
var ErrNoChatTemplate = errors.New("tokenizer: no chat_template")

// Tokenizer is a loaded tokenizer. It is safe for concurrent use.
type Tokenizer struct {
	model     *bpe
	norm      normalizer
	pre       preTokenizer
	dec       decoder
	added     []AddedToken
	addedByID map[int]*AddedToken
	addedByS  map[string]*AddedToken
	rawMatch  *addedMatcher // added tokens with normalized=false
	normMatch *addedMatcher // added tokens with normalized=true
	idToTok   []string      // model vocab by id ("" for holes)
	prefix    []int         // post-processor ids before the sequence
	suffix    []int         // post-processor ids after the sequence
	vocabSize int

	bos          int
	hasBOS       bool
	eos          []int  // ids that end generation (see stopIDs)
	eosToken     string // tokenizer_config.json's eos_token ("" if none)
	chatTemplate string
	now          func() time.Time // clock for strftime_now; tests replace it
}

// File names read by Load.
const (
	TokenizerFile        = "tokenizer.json"
	TokenizerConfigFile  = "tokenizer_config.json"
	GenerationConfigFile = "generation_config.json"
	SpecialTokensMapFile = "special_tokens_map.json"
	ChatTemplateFile     = "chat_template.jinja"
	ModelConfigFile      = "config.json"
)

// Load reads a tokenizer from a Hugging Face checkpoint directory:
// tokenizer.json (required; tokenizer.json.gz is accepted too),
// tokenizer_config.json, generation_config.json, special_tokens_map.json,
// chat_template.jinja and config.json (all optional; config.json is read
// only for eos_token_id).
func Load(dir string) (*Tokenizer, error) {
	tj, err := readMaybeGzip(filepath.Join(dir, TokenizerFile))
	if err != nil {
		return nil, err
	}
	opt := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		return b, nil
	}
	files := Files{Tokenizer: tj}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{
		{TokenizerConfigFile, &files.TokenizerConfig},
		{GenerationConfigFile, &files.GenerationConfig},
		{SpecialTokensMapFile, &files.SpecialTokensMap},
		{ChatTemplateFile, &files.ChatTemplate},
		{ModelConfigFile, &files.ModelConfig},
	} {
		if *f.dst, err = opt(f.name); err != nil {
			return nil, err
		}
	}
	t, err := parseFiles(files)
	if err != nil {
		var fe *fileError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("tokenizer: %s: %w", filepath.Join(dir, fe.file), fe.err)
		}
		return nil, fmt.Errorf("tokenizer: %s: %w", dir, err)
	}
	return t, nil
}

func readMaybeGzip(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	f, gzErr := os.Open(path + ".gz")
	if gzErr != nil {
		return nil, fmt.Errorf("tokenizer: %w", err) // report the plain file as missing
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s.gz: %w", path, err)
	}
	b, err = io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s.gz: %w", path, err)
	}
	return b, nil
}

// Files holds the contents of a checkpoint's tokenizer files; only
// Tokenizer is required.
type Files struct {
	Tokenizer        []byte // tokenizer.json
	TokenizerConfig  []byte // tokenizer_config.json
	GenerationConfig []byte // generation_config.json
	SpecialTokensMap []byte // special_tokens_map.json
	ChatTemplate     []byte // chat_template.jinja
	ModelConfig      []byte // config.json (only eos_token_id is read)
}

// Parse builds a tokenizer from file contents (see Load).
func Parse(files Files) (*Tokenizer, error) {
	t, err := parseFiles(files)
	if err != nil {
		var fe *fileError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("tokenizer: %s: %w", fe.file, fe.err)
		}
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

// fileError ties a parse error to the file it came from.
type fileError struct {
	file string
	err  error
}

func (e *fileError) Error() string { return e.file + ": " + e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

type rawTokenizer struct {
	AddedTokens   []AddedToken
	Normalizer    json.RawMessage
	PreTokenizer  json.RawMessage
	PostProcessor json.RawMessage
	Decoder       json.RawMessage
	Model         *rawBPE
}

// splitTokenizerJSON cuts a tokenizer.json into the members Load uses (see
// fastjson.go). The model's vocabulary and merges are left raw.
func splitTokenizerJSON(data []byte) (*rawTokenizer, error) {
	top, err := splitObject(data)
	if err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	raw := &rawTokenizer{
		Normalizer:    top["normalizer"],
		PreTokenizer:  top["pre_tokenizer"],
		PostProcessor: top["post_processor"],
		Decoder:       top["decoder"],
	}
	if v := top["added_tokens"]; !isNull(v) {
		if err := json.Unmarshal(v, &raw.AddedTokens); err != nil {
			return nil, fmt.Errorf("added_tokens: %w", err)
		}
	}
	mv := top["model"]
	if isNull(mv) {
		return nil, errors.New("no model")
	}
	model, err := splitObject(mv)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	rm := &rawBPE{RawVocab: model["vocab"]}
	if m := model["merges"]; !isNull(m) {
		rm.mergesJSON = m
	}
	for _, f := range []struct {
		key string
		dst any
	}{
		{"type", &rm.Type},
		{"dropout", &rm.Dropout},
		{"unk_token", &rm.UnkToken},
		{"continuing_subword_prefix", &rm.Prefix},
		{"end_of_word_suffix", &rm.Suffix},
		{"fuse_unk", &rm.FuseUnk},
		{"byte_fallback", &rm.ByteFall},
		{"ignore_merges", &rm.IgnoreMerge},
	} {
		if v, ok := model[f.key]; ok {
			if err := json.Unmarshal(v, f.dst); err != nil {
				return nil, fmt.Errorf("model %s: %w", f.key, err)
			}
		}
	}
	if rm.Type == "" && rm.mergesJSON != nil {
		rm.Type = "BPE"
	}
	raw.Model = rm
	return raw, nil
}

func parseFiles(files Files) (*Tokenizer, error) {
	t, err := parseTokenizerJSON(files.Tokenizer)
	if err != nil {
		return nil, &fileError{TokenizerFile, err}
	}
	if err := t.applyConfigs(files); err != nil {
		return nil, err
	}
	return t, nil
}

func parseTokenizerJSON(data []byte) (*Tokenizer, error) {
	if len(data) == 0 {
		return nil, errors.New("empty file")
	}
	raw, err := splitTokenizerJSON(data)
	if err != nil {
		return nil, err
	}
	rm := raw.Model
	if rm.Type != "BPE" {
		return nil, &UnsupportedError{Component: "model", Type: rm.Type}
	}
	if rm.Vocab, err = parseVocab(rm.RawVocab); err != nil {
		return nil, fmt.Errorf("model BPE %w", err)
	}
	t := &Tokenizer{addedByID: map[int]*AddedToken{}, addedByS: map[string]*AddedToken{}, now: time.Now}
	if t.model, err = parseBPE(rm); err != nil {
		return nil, err
	}
	if t.norm, err = parseNormalizer(raw.Normalizer); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(raw.PreTokenizer); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(raw.Decoder); err != nil {
		return nil, err
	}

	maxID := -1
	for _, id := range t.model.vocab {
		maxID = max(maxID, id)
	}
	t.added = raw.AddedTokens
	for i := range t.added {
		a := &t.added[i]
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("added token %d (%q): bad id or empty content", a.ID, a.Content)
		}
		t.addedByID[a.ID] = a
		t.addedByS[a.Content] = a
		maxID = max(maxID, a.ID)
	}
	if maxID >= maxVocab {
		return nil, fmt.Errorf("token id %d too large", maxID)
	}
	t.vocabSize = maxID + 1
	t.idToTok = make([]string, t.vocabSize)
	for tok, id := range t.model.vocab {
		t.idToTok[id] = tok
	}
	var rawEntries, normEntries []matchEntry
	for i := range t.added {
		a := &t.added[i]
		if a.Normalized && t.norm != nil {
			normEntries = append(normEntries, matchEntry{pat: t.norm.normalize(a.Content), tok: a})
		} else {
			rawEntries = append(rawEntries, matchEntry{pat: a.Content, tok: a})
		}
	}
	t.rawMatch = newAddedMatcher(rawEntries)
	t.normMatch = newAddedMatcher(normEntries)

	if t.prefix, t.suffix, err = t.parsePostProcessor(raw.PostProcessor); err != nil {
		return nil, err
	}
	return t, nil
}

type rawPost struct {
	Type          string            `json:"type"`
	Single        []json.RawMessage `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
	Processors []json.RawMessage `json:"processors"`
	Sep        []json.RawMessage `json:"sep"`
	Cls        []json.RawMessage `json:"cls"`
}

// parsePostProcessor reduces a post-processor to the ids it puts before and
// after a single sequence.
func (t *Tokenizer) parsePostProcessor(raw json.RawMessage) (prefix, suffix []int, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	var r rawPost
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, nil, fmt.Errorf("post_processor: %w", err)
	}
	switch r.Type {
	case "ByteLevel":
		return nil, nil, nil
	case "Sequence":
		for _, sub := range r.Processors {
			p, s, err := t.parsePostProcessor(sub)
			if err != nil {
				return nil, nil, err
			}
			prefix = append(slices.Clone(p), prefix...)
			suffix = append(suffix, s...)
		}
		return prefix, suffix, nil
	case "TemplateProcessing":
		seen := false
		for _, item := range r.Single {
			var it struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			}
			if err := json.Unmarshal(item, &it); err != nil {
				return nil, nil, fmt.Errorf("post_processor TemplateProcessing: %w", err)
			}
			switch {
			case it.Sequence != nil:
				if seen {
					return nil, nil, errors.New("post_processor TemplateProcessing: single template has two sequences")
				}
				seen = true
			case it.SpecialToken != nil:
				st, ok := r.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return nil, nil, fmt.Errorf("post_processor TemplateProcessing: special token %q not defined", it.SpecialToken.ID)
				}
				if seen {
					suffix = append(suffix, st.IDs...)
				} else {
					prefix = append(prefix, st.IDs...)
				}
			default:
				return nil, nil, fmt.Errorf("post_processor TemplateProcessing: bad item %s", item)
			}
		}
		if !seen {
			return nil, nil, errors.New("post_processor TemplateProcessing: single template has no sequence")
		}
		return prefix, suffix, nil
	case "BertProcessing", "RobertaProcessing":
		cls, err1 := tokenPairID(r.Cls)
		sep, err2 := tokenPairID(r.Sep)
		if err := errors.Join(err1, err2); err != nil {
			return nil, nil, fmt.Errorf("post_processor %s: %w", r.Type, err)
		}
		return []int{cls}, []int{sep}, nil
	}
	return nil, nil, &UnsupportedError{Component: "post_processor", Type: r.Type}
}

// tokenPairID reads a ["token", id] pair.
func tokenPairID(pair []json.RawMessage) (int, error) {
	if len(pair) != 2 {
		return 0, fmt.Errorf("want [token, id], got %d items", len(pair))
	}
	var id int
	if err := json.Unmarshal(pair[1], &id); err != nil {
		return 0, err
	}
	return id, nil
}

// tokenName reads a special token given as a string or an AddedToken
// object {"content": ...}; ok is false for null or absent.
func tokenName(raw json.RawMessage) (string, bool) {
	if isNull(raw) {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Content != "" {
		return obj.Content, true
	}
	return "", false
}

// applyConfigs reads BOS, EOS, the chat template and add_bos/eos_token
// overrides from the optional files.
func (t *Tokenizer) applyConfigs(files Files) error {
	var cfg, stm map[string]json.RawMessage
	if len(files.TokenizerConfig) > 0 {
		if err := json.Unmarshal(files.TokenizerConfig, &cfg); err != nil {
			return &fileError{TokenizerConfigFile, fmt.Errorf("decode JSON: %w", err)}
		}
	}
	if len(files.SpecialTokensMap) > 0 {
		if err := json.Unmarshal(files.SpecialTokensMap, &stm); err != nil {
			return &fileError{SpecialTokensMapFile, fmt.Errorf("decode JSON: %w", err)}
		}
	}
	lookup := func(key string) (string, bool) {
		if raw, ok := cfg[key]; ok {
			return tokenName(raw)
		}
		return tokenName(stm[key])
	}
	if name, ok := lookup("bos_token"); ok {
		if id, found := t.TokenID(name); found {
			t.bos, t.hasBOS = id, true
		}
	}
	if len(files.GenerationConfig) > 0 && !t.hasBOS {
		var gen struct {
			BOS json.RawMessage `json:"bos_token_id"`
		}
		if err := json.Unmarshal(files.GenerationConfig, &gen); err != nil {
			return &fileError{GenerationConfigFile, fmt.Errorf("decode JSON: %w", err)}
		}
		if b, err := intOrList(gen.BOS); err == nil && len(b) == 1 {
			t.bos, t.hasBOS = b[0], true
		}
	}
	if name, ok := lookup("eos_token"); ok {
		if _, found := t.TokenID(name); found {
			t.eosToken = name
		}
	}
	var err error
	t.eos, err = stopIDs(stopSources{
		generationConfig: files.GenerationConfig,
		modelConfig:      files.ModelConfig,
		eosToken:         t.eosToken,
	}, t.TokenID, func(name string) bool {
		a, ok := t.addedByS[name]
		return ok && a.Special
	})
	if err != nil {
		return err
	}

	// transformers rebuilds the post-processor from add_bos_token /
	// add_eos_token when tokenizer_config.json sets them.
	if b, ok := boolField(cfg, "add_bos_token"); ok {
		t.prefix = nil
		if b && t.hasBOS {
			t.prefix = []int{t.bos}
		}
	}
	if b, ok := boolField(cfg, "add_eos_token"); ok {
		t.suffix = nil
		if name, found := lookup("eos_token"); b && found {
			if id, ok := t.TokenID(name); ok {
				t.suffix = []int{id}
			}
		}
	}

	if raw, ok := cfg["chat_template"]; ok && !isNull(raw) {
		tpl, err := chatTemplateField(raw)
		if err != nil {
			return &fileError{TokenizerConfigFile, err}
		}
		t.chatTemplate = tpl
	}
	if t.chatTemplate == "" && len(files.ChatTemplate) > 0 {
		t.chatTemplate = string(files.ChatTemplate)
	}
	return nil
}

func boolField(m map[string]json.RawMessage, key string) (bool, bool) {
	raw, ok := m[key]
	if !ok {
		return false, false
	}
	var b bool
	if json.Unmarshal(raw, &b) != nil {
		return false, false
	}
	return b, true
}

func intOrList(raw json.RawMessage) ([]int, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one int
	if json.Unmarshal(raw, &one) == nil {
		return []int{one}, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("want an integer or a list of integers: %s", raw)
	}
	return list, nil
}

// chatTemplateField reads chat_template given as a string or as a list of
// {"name", "template"} (the one named "default" is used).
func chatTemplateField(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("chat_template: want a string or a list of named templates")
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil
		}
	}
	if len(list) > 0 {
		return list[0].Template, nil
	}
	return "", nil
}

// Encode returns the token ids of text. With addSpecial, the ids the
// post-processor adds (such as BOS) are included. Added tokens in text, such
// as "<|eot_id|>", are always recognised, as in tokenizers. Invalid UTF-8 is
// replaced with U+FFFD first.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	var ids []int
	if addSpecial {
		ids = append(ids, t.prefix...)
	}
	for _, sg := range t.rawMatch.split(text, true) {
		if sg.tok != nil {
			ids = append(ids, sg.tok.ID)
			continue
		}
		s := sg.text
		if t.norm != nil {
			s = t.norm.normalize(s)
		}
		for _, sub := range t.normMatch.split(s, sg.atStart) {
			if sub.tok != nil {
				ids = append(ids, sub.tok.ID)
				continue
			}
			ids = t.encodeText(ids, sub.text, sub.atStart)
		}
	}
	if addSpecial {
		ids = append(ids, t.suffix...)
	}
	return ids
}

// encodeText pre-tokenizes s and runs the model on every piece.
func (t *Tokenizer) encodeText(dst []int, s string, atStart bool) []int {
	if s == "" {
		return dst
	}
	if t.pre == nil {
		return t.model.encodeWord(dst, s)
	}
	for _, p := range t.pre.preTokenize([]piece{{text: s, atStart: atStart}}) {
		dst = t.model.encodeWord(dst, p.text)
	}
	return dst
}

// Decode returns the text of ids. With skipSpecial, added tokens marked
// special (BOS, EOS, <|im_end|>, ...) are left out. Ids outside the
// vocabulary are ignored.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if a, ok := t.addedByID[id]; ok {
			if skipSpecial && a.Special {
				continue
			}
			tokens = append(tokens, a.Content)
			continue
		}
		if id >= 0 && id < len(t.idToTok) && t.idToTok[id] != "" {
			tokens = append(tokens, t.idToTok[id])
		}
	}
	if t.dec == nil {
		return strings.Join(tokens, " ")
	}
	return strings.Join(t.dec.decodeChain(tokens), "")
}

// BOS returns the beginning-of-sequence id named by tokenizer_config.json
// (or special_tokens_map.json, or generation_config.json); ok is false when
// the tokenizer has none (Qwen).
func (t *Tokenizer) BOS() (id int, ok bool) { return t.bos, t.hasBOS }

// EOS returns every id that ends generation, by the rule of stopIDs:
// generation_config.json's eos_token_id (an integer or a list), config.json's
// eos_token_id, tokenizer_config.json's eos_token, and the end-of-turn
// tokens of the supported chat formats that the vocabulary has as special
// tokens (Gemma's <end_of_turn> and <eos>, Llama 3's <|eot_id|> and
// <|end_of_text|>, ChatML's <|im_end|> and <|endoftext|>), in that order
// without repeats.
func (t *Tokenizer) EOS() []int { return slices.Clone(t.eos) }

// EOSToken returns tokenizer_config.json's (or special_tokens_map.json's)
// eos_token, the one chat templates see as eos_token; ok is false when
// there is none.
func (t *Tokenizer) EOSToken() (string, bool) { return t.eosToken, t.eosToken != "" }

// IsEOS reports whether id is one of EOS(), that is whether generation
// stops after it.
func (t *Tokenizer) IsEOS(id int) bool { return slices.Contains(t.eos, id) }

// TokenID returns the id of a token string (added tokens first, then the
// model vocabulary), in the model's own alphabet ("Ġthe", "▁the").
func (t *Tokenizer) TokenID(s string) (int, bool) {
	if a, ok := t.addedByS[s]; ok {
		return a.ID, true
	}
	id, ok := t.model.vocab[s]
	return id, ok
}

// Token returns the token string of id.
func (t *Tokenizer) Token(id int) (string, bool) {
	if a, ok := t.addedByID[id]; ok {
		return a.Content, true
	}
	if id >= 0 && id < len(t.idToTok) && t.idToTok[id] != "" {
		return t.idToTok[id], true
	}
	return "", false
}

// VocabSize returns the largest token id plus one, counting added tokens.
// The model's embedding table may be larger (padded).
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// AddedTokens returns a copy of the added tokens of tokenizer.json.
func (t *Tokenizer) AddedTokens() []AddedToken { return slices.Clone(t.added) }

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.Special
}

// maxVocab caps token ids so a corrupt file cannot make Load allocate a
// huge id table; real vocabularies are below 300,000.
const maxVocab = 1 << 21
