package tokenizer

import (
	"strings"
	"testing"
)

// TestRewriteConditionals renders conditional expressions in places gonja's
// parser rejects; the wanted strings are what Jinja gives for each source.
func TestRewriteConditionals(t *testing.T) {
	vars := map[string]any{
		"f":        func(a int) int { return a * 10 },
		"messages": []any{map[string]any{"role": "user", "content": "hi"}},
	}
	tests := []struct{ src, want string }{
		{`{{ 'a' + ('x' if true else 'y') }}`, "ax"},
		{`{{ 'a' + ('x' if false else "") }}`, "a"},
		// A false-looking chosen branch is still chosen.
		{`{{ ('' if true else 'y') ~ '|' }}`, "|"},
		{`{{ (0 if true else 5) + 1 }}`, "1"},
		{`{{ f(1 if false else 2) }}`, "20"},
		{`{{ [1 if true else 2, 3][0] }}`, "1"},
		{`{{ {'k': 'v' if false else 'w'}['k'] }}`, "w"},
		{`{{ messages | map(attribute='role' if true else 'content') | join(',') }}`, "user"},
		// Chains associate to the right.
		{`{{ 'a' if false else 'b' if false else 'c' }}`, "c"},
		{`{{ 'a' if false else 'b' if true else 'c' }}`, "b"},
		// Only the chosen branch is evaluated.
		{`{{ (none['x'] if false else 'ok') }}`, "ok"},
		{`{{ ('bad' if none['x'] else 'y') if false else 'z' }}`, "z"},
		// Without else the value is undefined (none in gonja).
		{`{{ ('x' if false) ~ 'y' }}`, "y"},
		// Filters bind to their operand.
		{`{{ 'x' if false else 'y' | upper }}`, "Y"},
		{`{{ ('x' if true else 'y') | upper }}`, "X"},
		// Strings, attribute names and other words are not keywords.
		{`{{ ('a if b else c' if true else 'z') }}`, "a if b else c"},
		{`{{ ("it's" if 'else' else 'no') }}`, "it's"},
		{`{% set x = ('p' if messages | length > 0 else 'q') %}{{ x }}`, "p"},
		{`{% if ('' if true else 'y') %}T{% else %}F{% endif %}`, "F"},
		{`{% for m in (messages if true else []) %}{{ m.role }}{% endfor %}`, "user"},
		{`{%- if (true) -%} {{- (1 if true else 2) -}} {%- endif -%}`, "1"},
		// Loop filters and top-level set conditionals are gonja's own.
		{`{% for x in [1, 2, 3] if x > 1 %}{{ x }}{% endfor %}`, "23"},
		{`{% set x = 'a' if false else 'b' %}{{ x }}`, "b"},
		{`{{ [1, 2, 3][1:] | join(',') }}`, "2,3"},
		{`{# ('x' if y else z) #}ok`, "ok"},
		{`{% raw %}{{ (a if b else c) }}{% endraw %}`, "{{ (a if b else c) }}"},
		// transformers' generation block renders its body.
		{"{% for m in messages %}{%- generation -%}\n {{ m.content }}{% endgeneration %}{% endfor %}", "hi"},
		{"a\n  {% generation %}\nb{% endgeneration %}\nc", "a\nbc"},
	}
	for _, tc := range tests {
		got, err := renderTemplate(tc.src, vars, nil)
		if err != nil {
			t.Errorf("%s: %v (rewritten %s)", tc.src, err, rewriteConditionals(tc.src))
			continue
		}
		if got != tc.want {
			t.Errorf("%s = %q, want %q (rewritten %s)", tc.src, got, tc.want, rewriteConditionals(tc.src))
		}
	}
	// Sources without conditionals in brackets are unchanged.
	for _, src := range []string{
		"{{ a }} if b else c",
		"{% if a %}x{% elif b %}y{% else %}z{% endif %}",
		"{% for m in messages if m.role %}{{ m.content }}{% endfor %}",
		"{% set x = a if b else c %}",
		"{{ x.if }} {{ f(a, b=c) }}",
	} {
		if got := rewriteConditionals(src); got != src {
			t.Errorf("rewriteConditionals(%q) = %q, want it unchanged", src, got)
		}
	}
	if got := rewriteConditionals("{{ (a if b else c) }}"); !strings.Contains(got, "((b) and [a] or [c])[0]") {
		t.Errorf("rewrite = %q", got)
	}
}
