package tokenizer

import "testing"

// TestLstripBlocks checks the rewrite against outputs worked out from
// Jinja's lexer rules (lstrip_blocks and trim_blocks on).
func TestLstripBlocks(t *testing.T) {
	tests := []struct{ src, rewritten, rendered string }{
		{"a {% if true %}b{% endif %}", "a {% if true %}b{% endif %}", "a b"},
		{"  {% if true %}b{% endif %}", "{% if true %}b{% endif %}", "b"},
		{"a\n  \t{% if true %}b{% endif %}", "a\n{% if true %}b{% endif %}", "a\nb"},
		{"a {{ 1 }} {% if true %}b{% endif %}", "a {{ 1 }} {% if true %}b{% endif %}", "a 1 b"},
		{"  {%+ if true %}b{% endif %}", "  {%+ if true %}b{% endif %}", "  b"},
		{"  {%- if true %}b{% endif %}", "  {%- if true %}b{% endif %}", "b"},
		{"x\n  {# c #}y", "x\n{# c #}y", "x\ny"},
		{"x  {# c #}y", "x  {# c #}y", "x  y"},
		// After a block tag whose newline trim_blocks removes, the next
		// line starts right after the tag.
		{"{% if true %}\n  {% if true %}b{% endif %}{% endif %}", "{% if true %}\n{% if true %}b{% endif %}{% endif %}", "b"},
		{"{% if true %} {% if true %}b{% endif %}{% endif %}", "{% if true %} {% if true %}b{% endif %}{% endif %}", " b"},
		{"{% if true %}\n  x\n  {% endif %}\ny", "{% if true %}\n  x\n{% endif %}\ny", "  x\ny"},
		// Quoted tag ends inside tags are not tag ends.
		{"{{ '%}' }}\n  {% if true %}z{% endif %}", "{{ '%}' }}\n{% if true %}z{% endif %}", "%}\nz"},
		// raw sections are left alone.
		{"{% raw %}\n  {% x %}{% endraw %}", "{% raw %}\n  {% x %}{% endraw %}", "  {% x %}"},
	}
	for _, tc := range tests {
		if got := lstripBlocks(tc.src); got != tc.rewritten {
			t.Errorf("lstripBlocks(%q) = %q, want %q", tc.src, got, tc.rewritten)
		}
		got, err := renderTemplate(tc.src, map[string]any{}, nil)
		if err != nil {
			t.Errorf("render %q: %v", tc.src, err)
			continue
		}
		if got != tc.rendered {
			t.Errorf("render %q = %q, want %q", tc.src, got, tc.rendered)
		}
	}
	// Unterminated tags are passed through for the parser to reject.
	for _, src := range []string{"a {{ b", "  {% if", "{# c"} {
		if got := lstripBlocks(src); got != src && got != src[2:] {
			t.Errorf("lstripBlocks(%q) = %q", src, got)
		}
	}
}
