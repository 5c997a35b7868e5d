package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestApplyChatTemplate(t *testing.T) {
	sysUser := []Message{{"system", "You are terse."}, {"user", "  Hi!\n"}}
	tests := []struct {
		name   string
		tok    string
		msgs   []Message
		addGen bool
		vars   map[string]any
		want   string
	}{
		{
			// The llama3 template always ends with the assistant header
			// and trims message content; BOS comes first.
			name: "llama3", tok: "llama3", msgs: sysUser, addGen: false,
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n",
		},
		{
			// Qwen 3 does not trim content and has no BOS.
			name: "qwen3 generation prompt", tok: "qwen3", msgs: sysUser, addGen: true,
			want: "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n  Hi!\n<|im_end|>\n<|im_start|>assistant\n",
		},
		{
			name: "qwen3 thinking off", tok: "qwen3", msgs: []Message{{"user", "Hello"}}, addGen: true,
			vars: map[string]any{"enable_thinking": false},
			want: "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
		},
		{
			// An assistant turn after the last user query keeps its
			// reasoning, re-wrapped in <think> tags.
			name: "qwen3 final assistant keeps reasoning", tok: "qwen3",
			msgs: []Message{{"user", "2+2?"}, {"assistant", "<think>\nadd\n</think>\n\n4"}},
			want: "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>\n",
		},
		{
			// Before the last user query the reasoning is dropped.
			name: "qwen3 earlier assistant drops reasoning", tok: "qwen3",
			msgs: []Message{{"user", "2+2?"}, {"assistant", "<think>\nadd\n</think>\n\n4"}, {"user", "Thanks"}},
			want: "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n",
		},
		{
			// Consecutive tool results share one user turn.
			name: "qwen3 tool responses", tok: "qwen3", addGen: true,
			msgs: []Message{{"user", "Weather?"}, {"assistant", "Checking."}, {"tool", "20C"}, {"tool", "dry"}},
			want: "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\nChecking.<|im_end|>\n" +
				"<|im_start|>user\n<tool_response>\n20C\n</tool_response>\n<tool_response>\ndry\n</tool_response><|im_end|>\n" +
				"<|im_start|>assistant\n",
		},
		{
			// Gemma 3 folds the system prompt into the first user turn,
			// names the assistant "model" and trims content.
			name: "gemma3 system folded", tok: "gemma3", msgs: sysUser, addGen: true,
			want: "<bos><start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n<start_of_turn>model\n",
		},
		{
			name: "gemma3 no system", tok: "gemma3", msgs: []Message{{"user", "Hi"}, {"assistant", " Hello "}},
			want: "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n",
		},
		{
			name: "tiny with prompt", tok: "tiny", msgs: []Message{{"user", " Tell me a fortune. "}}, addGen: true,
			want: "<|begin_of_text|><|user|>\nTell me a fortune.\n<|assistant|>\n",
		},
		{
			name: "tiny without prompt", tok: "tiny", msgs: []Message{{"user", "Hi"}, {"assistant", "Hello"}},
			want: "<|begin_of_text|><|user|>\nHi\n<|assistant|>\nHello\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk := loadTestdata(t, tc.tok)
			got, err := tk.RenderChat(tc.msgs, ChatOptions{AddGenerationPrompt: tc.addGen, Vars: tc.vars})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if tc.vars == nil {
				got2, err := tk.ApplyChatTemplate(tc.msgs, tc.addGen)
				if err != nil || got2 != got {
					t.Errorf("ApplyChatTemplate = %q, %v; want RenderChat's %q", got2, err, got)
				}
			}
		})
	}
}

// instTemplate is an [INST]-style template written for this test (the
// Mistral tokenizer_config.json in testdata carries no chat_template).
const instTemplate = "{{ bos_token }}{% for m in messages %}" +
	"{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}" +
	"{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}" +
	"{% endfor %}"

func TestChatTemplateMistral(t *testing.T) {
	tk := loadTestdata(t, "mistral")
	if _, err := tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, true); !errors.Is(err, ErrNoChatTemplate) {
		t.Fatalf("ApplyChatTemplate without template: err = %v, want ErrNoChatTemplate", err)
	}
	got, err := tk.RenderChat([]Message{{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}}, ChatOptions{Template: instTemplate})
	if err != nil {
		t.Fatal(err)
	}
	if want := "<s>[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Encoding the rendered text finds <s> and </s> as added tokens.
	ids := tk.Encode(got, false)
	if ids[0] != 1 || !slices.Contains(ids, 2) {
		t.Errorf("Encode(rendered) = %v; want <s>=1 first and </s>=2 inside", ids)
	}

	_, err = tk.RenderChat([]Message{{"assistant", "x"}}, ChatOptions{Template: instTemplate})
	var te *TemplateError
	if !errors.As(err, &te) || te.Msg != "roles must alternate" {
		t.Errorf("raise_exception: err = %v, want TemplateError(roles must alternate)", err)
	}
}

func TestChatTemplateFunctions(t *testing.T) {
	tk := loadTestdata(t, "tiny")
	old := tk.now
	tk.now = func() time.Time { return time.Date(2024, 7, 6, 15, 4, 5, 0, time.UTC) }
	defer func() { tk.now = old }()
	tests := []struct{ tpl, want string }{
		{"{{ strftime_now('%d %b %Y') }}", "06 Jul 2024"},
		{"{{ strftime_now('%A %B %-d %H:%M:%S %I%p %j %y %%') }}", "Saturday July %-d 15:04:05 03PM 188 24 %"},
		{"{{ eos_token }}|{{ bos_token }}", "<|end_of_text|>|<|begin_of_text|>"},
		{"{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}", "user=a;assistant=b;"},
		{"{{ messages | length }} {{ messages[-1]['content'] | upper }}", "2 B"},
		// trim_blocks and lstrip_blocks, as transformers sets them.
		{"{% if true %}\n  x\n  {% endif %}\ny", "  x\ny"},
		{"{{ undefined_thing is defined }}", "False"},
		{"{{ tools is none }} {{ tools is not none }} {% if not tools %}no tools{% endif %}", "True False no tools"},
		// lstrip_blocks only strips spaces that start a line (gonja's own
		// option would also eat the space after "}}").
		{"a {{ 1 }} {% if true %}b{% endif %}", "a 1 b"},
	}
	for _, tc := range tests {
		got, err := tk.RenderChat([]Message{{"user", "a"}, {"assistant", "b"}}, ChatOptions{Template: tc.tpl})
		if err != nil {
			t.Errorf("%q: %v", tc.tpl, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.tpl, got, tc.want)
		}
	}
	// gonja panics on a string modulo; that must come back as an error.
	for _, bad := range []string{"{% for %}", "{{ 1 +", "{% include 'x.jinja' %}", "{% extends '/etc/passwd' %}", "{{ '%s' % 'x' }}"} {
		if out, err := tk.RenderChat(nil, ChatOptions{Template: bad}); err == nil {
			t.Errorf("%q: no error (got %q)", bad, out)
		}
	}
}

func TestChatEncodeLlama3(t *testing.T) {
	tk := loadTestdata(t, "llama3")
	s, err := tk.ApplyChatTemplate([]Message{{"user", "Hi!"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	id := func(tok string) int {
		i, ok := tk.TokenID(tok)
		if !ok {
			t.Fatalf("no token %q", tok)
		}
		return i
	}
	want := []int{128000, 128006, id("user"), 128007, id("ĊĊ"), id("Hi"), id("!"), 128009, 128006, id("assistant"), 128007, id("ĊĊ")}
	if got := tk.Encode(s, false); !slices.Equal(got, want) {
		t.Errorf("Encode(%q) = %v, want %v", s, got, want)
	}
}

// TestChatExamples renders each family's chat_example.json (system, user,
// assistant, user; add_generation_prompt true) and compares with
// chat_example.txt, the string a reference Jinja engine produced from the
// same template (see testdata/README.md).
func TestChatExamples(t *testing.T) {
	for _, family := range []string{"gemma3", "qwen3", "llama3"} {
		t.Run(family, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", family, "chat_example.json"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", family, "chat_example.txt"))
			if err != nil {
				t.Fatal(err)
			}
			var msgs []struct{ Role, Content string }
			if err := json.Unmarshal(raw, &msgs); err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 4 {
				t.Fatalf("chat_example.json: %d messages, want 4", len(msgs))
			}
			var m []Message
			for _, x := range msgs {
				m = append(m, Message{Role: x.Role, Content: x.Content})
			}
			tk := loadTestdata(t, family)
			got, err := tk.ApplyChatTemplate(m, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

// TestChatGemma3 checks Gemma 3's role check and the ids of a rendered
// prompt: <bos> from the template (not added again), turn markers as single
// added tokens.
func TestChatGemma3(t *testing.T) {
	tk := loadTestdata(t, "gemma3")
	_, err := tk.ApplyChatTemplate([]Message{{"user", "a"}, {"user", "b"}}, true)
	var te *TemplateError
	if !errors.As(err, &te) || !strings.Contains(te.Msg, "must alternate") {
		t.Errorf("two user turns: err = %v, want the template's raise_exception", err)
	}
	s, err := tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	id := func(tok string) int {
		i, ok := tk.TokenID(tok)
		if !ok {
			t.Fatalf("no token %q", tok)
		}
		return i
	}
	want := []int{2, 105, id("user"), 107, id("Hi"), 106, 107, 105, id("model"), 107}
	if got := tk.Encode(s, false); !slices.Equal(got, want) {
		t.Errorf("Encode(%q) = %v, want %v", s, got, want)
	}
}
