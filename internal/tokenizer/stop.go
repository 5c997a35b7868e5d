package tokenizer

import (
	"encoding/json"
	"fmt"
	"slices"
)

// endOfTurnTokens are special tokens that end an assistant turn in the chat
// templates of the supported families, stopping generation whenever the
// tokenizer has them as special added tokens, even when no config file
// lists them: Gemma's <end_of_turn> (its tokenizer_config eos_token) and
// <eos>, Llama 3's <|eot_id|> and <|end_of_text|>, ChatML's <|im_end|> and
// <|endoftext|> (Qwen).
var endOfTurnTokens = []string{
	"<end_of_turn>", "<eos>",
	"<|eot_id|>", "<|end_of_text|>",
	"<|im_end|>", "<|endoftext|>",
}

// stopSources holds what the stop rule reads from a checkpoint's files.
type stopSources struct {
	generationConfig []byte // generation_config.json
	modelConfig      []byte // config.json
	eosToken         string // tokenizer_config.json's (or special_tokens_map.json's) eos_token; "" if none
}

// stopIDs is the one rule for the ids that end generation. In order, without
// repeats:
//
//  1. generation_config.json's eos_token_id (an integer or a list; Qwen 3
//     and Llama 3.x list several),
//  2. config.json's eos_token_id (integer or list; under text_config when
//     the top level has none, as in Gemma 3's multimodal checkpoints),
//  3. tokenizer_config.json's eos_token (or special_tokens_map.json's),
//     looked up by name,
//  4. each of endOfTurnTokens that the tokenizer has as a special token
//     (so Gemma stops on both <end_of_turn> and <eos>).
//
// tokenID resolves token names; special reports whether a name is a
// special added token. Errors name the file and key.
func stopIDs(src stopSources, tokenID func(string) (int, bool), special func(string) bool) ([]int, error) {
	var ids []int
	add := func(list ...int) {
		for _, id := range list {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	if len(src.generationConfig) > 0 {
		var gen struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(src.generationConfig, &gen); err != nil {
			return nil, &fileError{GenerationConfigFile, fmt.Errorf("decode JSON: %w", err)}
		}
		list, err := eosList(gen.EOS)
		if err != nil {
			return nil, &fileError{GenerationConfigFile, fmt.Errorf("eos_token_id: %w", err)}
		}
		add(list...)
	}
	if len(src.modelConfig) > 0 {
		var cfg struct {
			EOS  json.RawMessage `json:"eos_token_id"`
			Text *struct {
				EOS json.RawMessage `json:"eos_token_id"`
			} `json:"text_config"`
		}
		if err := json.Unmarshal(src.modelConfig, &cfg); err != nil {
			return nil, &fileError{ModelConfigFile, fmt.Errorf("decode JSON: %w", err)}
		}
		raw, key := cfg.EOS, "eos_token_id"
		if isNull(raw) && cfg.Text != nil {
			raw, key = cfg.Text.EOS, "text_config.eos_token_id"
		}
		list, err := eosList(raw)
		if err != nil {
			return nil, &fileError{ModelConfigFile, fmt.Errorf("%s: %w", key, err)}
		}
		add(list...)
	}
	if src.eosToken != "" {
		if id, ok := tokenID(src.eosToken); ok {
			add(id)
		}
	}
	for _, name := range endOfTurnTokens {
		if special(name) {
			if id, ok := tokenID(name); ok {
				add(id)
			}
		}
	}
	return ids, nil
}

// eosList reads an eos_token_id value: null, an id or a list of ids.
func eosList(raw json.RawMessage) ([]int, error) {
	list, err := intOrList(raw)
	if err != nil {
		return nil, err
	}
	for _, id := range list {
		if id < 0 {
			return nil, fmt.Errorf("id %d is negative; token ids start at 0", id)
		}
	}
	return list, nil
}
