package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync/atomic"

	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tokenizer"
)

func init() {
	register("chat", "chat with converted packages on the CPU interpreter (like ANEMLL's chat.py)", runChat)
}

// chatInput is where interactive chat reads from (tests replace it).
var chatInput io.Reader = os.Stdin

func runChat(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("chat", stderr)
	meta := fs.String("meta", "", "meta.yaml of the converted model")
	dir := fs.String("dir", "", "directory of converted packages (instead of --meta)")
	tokDir := fs.String("tokenizer", "", "directory with tokenizer.json (default: the package directory)")
	prompt := fs.String("prompt", "", "one-shot: generate for this prompt and exit")
	system := fs.String("system", "", "system message for the chat template")
	maxTokens := fs.Int("max-tokens", 0, "stop after N new tokens (default: until EOS or the context is full)")
	temperature := fs.Float64("temperature", 0, "sampling temperature (0 = greedy)")
	topP := fs.Float64("top-p", 1, "nucleus sampling: keep tokens up to this cumulative probability")
	seed := fs.Uint64("seed", 0, "random seed for sampling")
	noTemplate := fs.Bool("no-template", false, "feed the prompt as plain text, without the chat template")
	lowMem := fs.Bool("low-memory", false, "load one chunk's weights at a time (automatic when memory is short; slower decode with several chunks)")
	stats := fs.Bool("stats", true, "print prefill and decode tokens/s after each answer")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: anemll chat (--meta OUT/meta.yaml | --dir OUT) [--prompt TEXT --max-tokens N --temperature T --no-template]")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || (*dir == "") == (*meta == "") {
		return fmt.Errorf("%w: give exactly one of --meta or --dir", errUsage)
	}
	switch {
	case *maxTokens < 0:
		return fmt.Errorf("%w: --max-tokens %d: give a positive count, or 0 for no limit", errUsage, *maxTokens)
	case !(*temperature >= 0) || math.IsInf(*temperature, 1):
		return fmt.Errorf("%w: --temperature %v: give 0 (greedy) or a positive temperature", errUsage, *temperature)
	case !(*topP > 0 && *topP <= 1):
		return fmt.Errorf("%w: --top-p %v: give a probability in (0, 1]", errUsage, *topP)
	}
	files, err := findFiles(*dir, *meta)
	if err != nil {
		return err
	}
	td := *tokDir
	if td == "" {
		td = files.Dir
	}
	tok, err := tokenizer.Load(td)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: convert's step 7 copies the checkpoint's tokenizer.json there; copy it, or give --tokenizer DIR", err)
	}
	if err != nil {
		return err
	}
	stops := tok.EOS()
	if len(stops) == 0 {
		fmt.Fprintf(stderr, "note: %s names no end-of-generation token (eos_token_id in generation_config.json or config.json, eos_token in tokenizer_config.json); chat stops at --max-tokens or a full context\n", td)
	} else {
		fmt.Fprintf(stderr, "stop tokens: %s\n", describeTokens(tok, stops))
	}
	fmt.Fprintf(stderr, "loading %s ...\n", files.Dir)
	if err := runner.CheckMemory(files); err != nil {
		return err
	}
	low := *lowMem || runner.NeedsLowMemory(files)
	m, err := runner.LoadWith(files, runner.LoadOptions{LowMemory: low})
	if err != nil {
		return err
	}
	if low && m.LowMemory() {
		fmt.Fprintln(stderr, "low-memory mode: one chunk's weights loaded at a time")
	}
	switch {
	case m.Monolithic():
		fmt.Fprintf(stderr, "context %d, batch %d, monolithic\n", m.ContextLength, m.BatchSize)
	default:
		fmt.Fprintf(stderr, "context %d, batch %d, %d chunk(s)\n", m.ContextLength, m.BatchSize, len(files.Chunks))
	}
	if m.InModelArgmax() {
		if *temperature > 0 {
			return fmt.Errorf("%w: the LM head computes its argmax inside the model (converted with --argmax), so only greedy decoding is possible: sampling with --temperature needs full logits (reconvert without --argmax)", errUsage)
		}
		fmt.Fprintln(stderr, "in-model argmax: greedy decoding (sampling needs full logits: reconvert without --argmax)")
	}
	useTemplate := !*noTemplate && tok.ChatTemplate() != ""
	c := &chatSession{m: m, tok: tok, template: useTemplate, maxTokens: *maxTokens, stats: *stats,
		sampler: runner.NewSampler(runner.Sampling{Temperature: *temperature, TopP: *topP, Seed: *seed, Limit: tok.VocabSize()}),
		out:     stdout, log: stderr}
	if *system != "" {
		c.history = append(c.history, tokenizer.Message{Role: "system", Content: *system})
	}
	if *prompt != "" {
		return c.turn(*prompt)
	}
	fmt.Fprintln(stderr, "type a message; an empty line or Ctrl-D ends the chat, Ctrl-C stops an answer")
	stop := func() bool { c.stopped.Store(true); return true }
	sc := bufio.NewScanner(chatInput)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for {
		fmt.Fprint(stdout, "\n> ")
		if !sc.Scan() {
			fmt.Fprintln(stdout)
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			return nil
		}
		c.stopped.Store(false)
		interruptHook.Store(&stop)
		err := c.turn(line)
		interruptHook.Store(nil)
		if err != nil {
			return err
		}
	}
}

type chatSession struct {
	m         *runner.Model
	tok       *tokenizer.Tokenizer
	sampler   *runner.Sampler
	template  bool
	maxTokens int
	stats     bool
	history   []tokenizer.Message
	out, log  io.Writer
	// stopped is set by Ctrl-C during an interactive answer: generation
	// ends after the token being made, and the chat goes on.
	stopped atomic.Bool
}

// chatTokenHook, if set (tests), is called after each generated token with
// the number generated so far in the answer.
var chatTokenHook func(n int)

// promptIDs renders the conversation and tokenizes it. While it does not
// fit in the context it drops the oldest user/assistant exchange, keeping a
// leading system message and the new user message.
func (c *chatSession) promptIDs(user string) ([]int, error) {
	if !c.template {
		return c.tok.Encode(user, true), nil
	}
	msgs := append(append([]tokenizer.Message{}, c.history...), tokenizer.Message{Role: "user", Content: user})
	sys := 0
	if len(msgs) > 0 && msgs[0].Role == "system" {
		sys = 1
	}
	for {
		text, err := c.tok.ApplyChatTemplate(msgs, true)
		if err != nil {
			return nil, err
		}
		ids := c.tok.Encode(text, false)
		if len(ids) < c.m.ContextLength-1 || len(msgs) < sys+3 {
			return ids, nil
		}
		msgs = append(msgs[:sys:sys], msgs[sys+2:]...)
	}
}

func (c *chatSession) turn(user string) error {
	ids, err := c.promptIDs(user)
	if err != nil {
		return err
	}
	if len(ids) >= c.m.ContextLength-1 {
		ids = ids[len(ids)-(c.m.ContextLength-2):]
	}
	dec := c.tok.NewStreamDecoder(true)
	var answer []int
	if !c.template {
		fmt.Fprint(c.out, user)
	}
	st, err := c.m.Generate(ids, c.maxTokens, c.sampler, c.tok.IsEOS, func(id int) bool {
		answer = append(answer, id)
		fmt.Fprint(c.out, dec.Add(id))
		if chatTokenHook != nil {
			chatTokenHook(len(answer))
		}
		return !c.stopped.Load()
	})
	fmt.Fprint(c.out, dec.Flush())
	fmt.Fprintln(c.out)
	if err != nil {
		return err
	}
	if c.stats {
		stop := st.Stop
		if stop == "caller" {
			stop = "Ctrl-C"
		}
		if stop == "eos" {
			stop += " " + describeTokens(c.tok, []int{st.StopID})
		}
		fmt.Fprintf(c.log, "[%d prompt tokens, prefill %.1f tok/s; %d new tokens, decode %.1f tok/s; stop: %s]\n",
			st.PromptTokens, st.PrefillTokensPerSecond(), st.NewTokens, st.DecodeTokensPerSecond(), stop)
	}
	if c.template {
		c.history = append(c.history, tokenizer.Message{Role: "user", Content: user},
			tokenizer.Message{Role: "assistant", Content: c.tok.Decode(answer, true)})
	}
	return nil
}

// describeTokens lists ids with their token strings: "<eos> (1), ...".
func describeTokens(tok *tokenizer.Tokenizer, ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		name, ok := tok.Token(id)
		if !ok {
			name = "?"
		}
		parts[i] = fmt.Sprintf("%s (%d)", name, id)
	}
	return strings.Join(parts, ", ")
}
