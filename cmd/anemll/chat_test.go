package main

import (
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tokenizer"
)

// TestPromptTrimsOldExchanges fills the history beyond a small context and
// checks that the oldest user/assistant exchanges go first while the
// system message and the new user message stay.
func TestPromptTrimsOldExchanges(t *testing.T) {
	tok, err := tokenizer.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	c := &chatSession{m: &runner.Model{ContextLength: 120}, tok: tok, template: true,
		history: []tokenizer.Message{{Role: "system", Content: "You tell fortunes."}}}
	for i := 0; i < 6; i++ {
		c.history = append(c.history,
			tokenizer.Message{Role: "user", Content: "Tell me something about computers and cats, please."},
			tokenizer.Message{Role: "assistant", Content: "A computer is a cat that never sleeps on the keyboard."})
	}
	ids, err := c.promptIDs("What now?")
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) >= 119 {
		t.Fatalf("prompt of %d tokens does not fit a 120-token context", len(ids))
	}
	text := tok.Decode(ids, false)
	if !strings.Contains(text, "You tell fortunes.") || !strings.Contains(text, "What now?") {
		t.Errorf("system or new message dropped:\n%s", text)
	}
	if n := strings.Count(text, "never sleeps"); n == 0 || n == 6 {
		t.Errorf("%d of 6 old answers kept; want some but not all", n)
	}
}

// TestChatStopTokens checks that chat stops on the ids of the tokenizer's
// stop rule: Gemma 3's <end_of_turn> and <eos>, and the bundled model's
// <|end_of_text|>, as the startup line lists them.
func TestChatStopTokens(t *testing.T) {
	tests := []struct{ dir, want string }{
		{tinyModel, "<|end_of_text|> (1017)"},
		{"../../internal/tokenizer/testdata/gemma3", "<end_of_turn> (106), <eos> (1)"},
	}
	for _, tc := range tests {
		tok, err := tokenizer.Load(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := describeTokens(tok, tok.EOS()); got != tc.want {
			t.Errorf("%s: stop tokens %q, want %q", tc.dir, got, tc.want)
		}
	}
}
