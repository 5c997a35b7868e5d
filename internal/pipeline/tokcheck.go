package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/anemll/anemll/internal/tokenizer"
)

// checkTokenizer refuses, before anything is written, a run whose tokenizer
// step (it copies the checkpoint's tokenizer files for the runners) or
// verify step (it tokenizes a prompt) would fail on them: no tokenizer at
// all, a tokenizer.json or tokenizer_config.json that does not parse, or,
// when the run verifies, no tokenizer.json this project can read. Without
// it a run found out at the end, with every package already written.
func checkTokenizer(opts Options, tokStep, verifyStep int) error {
	copying := opts.runs(tokStep)
	verifying := opts.runs(verifyStep) && !opts.SkipCheck && opts.Verify != nil
	writes := opts.Restart < verifyStep && (opts.Only == 0 || opts.Only < verifyStep)
	if !writes || !copying && !verifying {
		return nil // verify alone writes nothing, and reports its own errors
	}
	tj := filepath.Join(opts.Model, tokenizer.TokenizerFile)
	_, err := os.Stat(tj)
	hasJSON := err == nil
	if !hasJSON && copying {
		if _, err := os.Stat(filepath.Join(opts.Model, "tokenizer.model")); err != nil {
			return fmt.Errorf("pipeline: %s has no tokenizer.json (or tokenizer.model): runners need one; add it to the checkpoint directory", opts.Model)
		}
	}
	if !hasJSON {
		if verifying {
			return fmt.Errorf("pipeline: %s has no tokenizer.json, which step %d (verify) needs to tokenize its prompt; add it to the checkpoint directory or pass --skip-check", opts.Model, verifyStep)
		}
		return nil
	}
	if !verifying {
		// The runners bring their own tokenizers: the files only have to
		// be intact, which a syntax check shows without the cost of a
		// full load (a second or so for Gemma 3's 33 MB tokenizer.json).
		for _, name := range []string{tokenizer.TokenizerFile, tokenizer.TokenizerConfigFile} {
			path := filepath.Join(opts.Model, name)
			b, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("pipeline: %w", err)
			}
			if !json.Valid(b) {
				return fmt.Errorf("pipeline: %s is not valid JSON; replace the file with the checkpoint's original", path)
			}
		}
		return nil
	}
	_, err = tokenizer.Load(opts.Model)
	var unsupported *tokenizer.UnsupportedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &unsupported):
		return fmt.Errorf("%w; step %d (verify) tokenizes with it: pass --skip-check to convert without verifying", err, verifyStep)
	default:
		return fmt.Errorf("%w; replace the file with the checkpoint's original", err)
	}
}
