package tokenizer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Message is one chat turn.
type Message struct {
	Role    string
	Content string
}

// ChatOptions adjusts RenderChat.
type ChatOptions struct {
	// AddGenerationPrompt asks the template to end with the header of an
	// assistant turn.
	AddGenerationPrompt bool
	// Template replaces the tokenizer's chat_template when not empty.
	Template string
	// Vars are extra template variables, such as "enable_thinking" (Qwen 3)
	// or "tools"; they override the standard ones.
	Vars map[string]any
}

// ChatTemplate returns the tokenizer's chat template source ("" if none).
func (t *Tokenizer) ChatTemplate() string { return t.chatTemplate }

// ApplyChatTemplate renders the tokenizer's chat_template for messages, the
// way transformers' apply_chat_template(tokenize=False) does. The result
// already holds the BOS token when the template writes it, so encode it
// with addSpecial false.
func (t *Tokenizer) ApplyChatTemplate(messages []Message, addGenerationPrompt bool) (string, error) {
	return t.RenderChat(messages, ChatOptions{AddGenerationPrompt: addGenerationPrompt})
}

// RenderChat renders a chat template with the Jinja semantics transformers
// uses (trim_blocks and lstrip_blocks on). The template sees messages (a list
// of {"role", "content"} maps), bos_token, eos_token,
// add_generation_prompt, raise_exception(msg) and strftime_now(format), plus
// opts.Vars; tools and documents are none unless given in Vars.
//
// gonja differs from Jinja in that it does not tell an undefined variable
// from none: "x is defined" is false when x is none, and an undefined x "is
// none". The templates of the supported families only test these together
// ("is defined and is not none"), where this makes no difference. tojson
// output may also differ from Python's json.dumps in spacing and key order.
// gonja's parser takes a conditional expression ("a if c else b") only as a
// whole {{ }} output or {% set %} value; the source is rewritten first so
// that conditionals work wherever Jinja allows them (inside parentheses, as
// Gemma 3's template writes them, in call arguments, list items and dict
// values, and chained), except inside a slice, and transformers'
// {% generation %} block is accepted; see rewriteConditionals. Still
// unsupported: Python string formatting ("'%s' % x" is an error) and
// none | string, which renders "" where Jinja writes "None".
func (t *Tokenizer) RenderChat(messages []Message, opts ChatOptions) (string, error) {
	src := opts.Template
	if src == "" {
		src = t.chatTemplate
	}
	if src == "" {
		return "", ErrNoChatTemplate
	}
	msgs := make([]any, len(messages))
	for i, m := range messages {
		msgs[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	vars := map[string]any{
		"messages":              msgs,
		"add_generation_prompt": opts.AddGenerationPrompt,
		"bos_token":             t.specialName(t.bos, t.hasBOS),
		"eos_token":             t.eosToken,
		// transformers passes these as None when not given.
		"tools":     nil,
		"documents": nil,
	}
	for k, v := range opts.Vars {
		vars[k] = v
	}
	out, err := renderTemplate(src, vars, t.now)
	if err != nil {
		return "", fmt.Errorf("tokenizer: chat template: %w", err)
	}
	return out, nil
}

func (t *Tokenizer) specialName(id int, ok bool) string {
	if !ok {
		return ""
	}
	s, _ := t.Token(id)
	return s
}

// TemplateError is raised by a template's raise_exception call.
type TemplateError struct{ Msg string }

func (e *TemplateError) Error() string { return "raise_exception: " + e.Msg }

// renderTemplate renders a Jinja source with gonja in a sandbox: the
// template cannot include, import or extend other templates.
func renderTemplate(src string, vars map[string]any, now func() time.Time) (out string, err error) {
	// gonja panics on some inputs (such as "'%s' % x", a modulo of a
	// string); a template comes from a checkpoint, so that is an error.
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("template engine failed: %v", r)
		}
	}()
	cfg := config.New()
	cfg.TrimBlocks = true
	// lstrip_blocks is done by lstripBlocks: gonja's LeftStripBlocks also
	// strips mid-line spaces that Jinja keeps.
	cfg.LeftStripBlocks = false
	ctx := exec.EmptyContext().Update(builtins.GlobalFunctions).Update(builtins.GlobalVariables)
	var raised *TemplateError
	ctx.Set("raise_exception", func(msg string) (string, error) {
		raised = &TemplateError{Msg: msg}
		return "", raised
	})
	ctx.Set("strftime_now", func(format string) string {
		return strftime(now(), format)
	})
	env := &exec.Environment{
		Context:           ctx,
		Filters:           builtins.Filters,
		Tests:             builtins.Tests,
		ControlStructures: builtins.ControlStructures,
		Methods:           builtins.Methods,
	}
	tpl, err := exec.NewTemplate(rootTemplate, cfg, &singleLoader{src: []byte(rewriteConditionals(lstripBlocks(src)))}, env)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	out, err = tpl.ExecuteToString(exec.NewContext(vars))
	if raised != nil {
		return "", raised
	}
	if err != nil {
		return "", fmt.Errorf("render: %w", err)
	}
	return out, nil
}

const rootTemplate = "chat_template"

// singleLoader serves the one chat template and nothing else.
type singleLoader struct{ src []byte }

var errNoLoad = errors.New("templates cannot load other templates")

func (l *singleLoader) Read(path string) (io.Reader, error) {
	if path != rootTemplate {
		return nil, errNoLoad
	}
	return bytes.NewReader(l.src), nil
}

func (l *singleLoader) Resolve(path string) (string, error) {
	if path != rootTemplate {
		return "", errNoLoad
	}
	return path, nil
}

func (l *singleLoader) Inherit(string) (loaders.Loader, error) { return l, nil }

// strftime formats tm with Python's strftime directives (the C locale).
// Unknown directives are kept as written.
func strftime(tm time.Time, format string) string {
	var sb strings.Builder
	pad := func(v, width int) string {
		s := strconv.Itoa(v)
		for len(s) < width {
			s = "0" + s
		}
		return s
	}
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			sb.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'a':
			sb.WriteString(tm.Weekday().String()[:3])
		case 'A':
			sb.WriteString(tm.Weekday().String())
		case 'b', 'h':
			sb.WriteString(tm.Month().String()[:3])
		case 'B':
			sb.WriteString(tm.Month().String())
		case 'd':
			sb.WriteString(pad(tm.Day(), 2))
		case 'e':
			sb.WriteString(fmt.Sprintf("%2d", tm.Day()))
		case 'm':
			sb.WriteString(pad(int(tm.Month()), 2))
		case 'y':
			sb.WriteString(pad(tm.Year()%100, 2))
		case 'Y':
			sb.WriteString(strconv.Itoa(tm.Year()))
		case 'H':
			sb.WriteString(pad(tm.Hour(), 2))
		case 'I':
			h := tm.Hour() % 12
			if h == 0 {
				h = 12
			}
			sb.WriteString(pad(h, 2))
		case 'M':
			sb.WriteString(pad(tm.Minute(), 2))
		case 'S':
			sb.WriteString(pad(tm.Second(), 2))
		case 'p':
			if tm.Hour() < 12 {
				sb.WriteString("AM")
			} else {
				sb.WriteString("PM")
			}
		case 'j':
			sb.WriteString(pad(tm.YearDay(), 3))
		case 'w':
			sb.WriteString(strconv.Itoa(int(tm.Weekday())))
		case 'Z':
			name, _ := tm.Zone()
			sb.WriteString(name)
		case '%':
			sb.WriteByte('%')
		default:
			sb.WriteByte('%')
			sb.WriteByte(format[i])
		}
	}
	return sb.String()
}
