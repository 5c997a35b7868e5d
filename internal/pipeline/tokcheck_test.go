package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenizerCheckedBeforeWriting runs the pipeline on copies of the tiny
// model whose tokenizer files are missing, corrupt or of a type this
// project cannot read. A run that steps 7 or 8 would fail is refused with
// the file named and a fix, before the output directory is even created; a
// run that does not need the broken file goes ahead.
func TestTokenizerCheckedBeforeWriting(t *testing.T) {
	tokJSON, err := os.ReadFile(filepath.Join(tinyModel, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	unsupported := strings.Replace(string(tokJSON), `"type":"BPE"`, `"type":"WordPiece"`, 1)
	if unsupported == string(tokJSON) {
		unsupported = strings.Replace(string(tokJSON), `"type": "BPE"`, `"type": "WordPiece"`, 1)
	}
	if unsupported == string(tokJSON) {
		t.Fatal("tiny tokenizer.json has no BPE model type to replace")
	}
	for _, tc := range []struct {
		name    string
		files   map[string]string // replaced ("" removes the file)
		only    int
		verify  bool
		wantErr []string // substrings of the error; nil: the run succeeds
	}{
		{"no tokenizer", map[string]string{"tokenizer.json": ""}, 0, false,
			[]string{"no tokenizer.json (or tokenizer.model)", "add it"}},
		{"corrupt tokenizer.json", map[string]string{"tokenizer.json": `{"model": {`}, 0, false,
			[]string{"tokenizer.json", "replace the file"}},
		{"corrupt tokenizer_config.json", map[string]string{"tokenizer_config.json": `{"bos_token": `}, 0, true,
			[]string{"tokenizer_config.json", "replace the file"}},
		{"sentencepiece only, verifying", map[string]string{"tokenizer.json": "", "tokenizer.model": "spm"}, 0, true,
			[]string{"no tokenizer.json", "step 8", "--skip-check"}},
		{"sentencepiece only, not verifying", map[string]string{"tokenizer.json": "", "tokenizer.model": "spm"}, 7, false, nil},
		{"unsupported type, verifying", map[string]string{"tokenizer.json": unsupported}, 0, true,
			[]string{"WordPiece", "--skip-check"}},
		{"unsupported type, not verifying", map[string]string{"tokenizer.json": unsupported}, 7, false, nil},
		{"corrupt, only verify", map[string]string{"tokenizer.json": `{"model": {`}, 8, true, nil},
		{"corrupt, only the LM head", map[string]string{"tokenizer.json": `{"model": {`}, 2, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model := t.TempDir()
			for _, name := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
				abs, err := filepath.Abs(filepath.Join(tinyModel, name))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(abs, filepath.Join(model, name)); err != nil {
					t.Fatal(err)
				}
			}
			for name, body := range tc.files {
				p := filepath.Join(model, name)
				os.Remove(p)
				if body != "" {
					if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			out := filepath.Join(t.TempDir(), "out")
			opts := baseOptions(out)
			opts.Model, opts.Only = model, tc.only
			verified := false
			if tc.verify {
				opts.SkipCheck = false
				opts.Verify = func(string) error { verified = true; return nil }
			}
			_, err := Run(opts)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if tc.verify && !verified {
					t.Error("step 8 did not run")
				}
				return
			}
			if err == nil {
				t.Fatal("Run succeeded, want an error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if _, serr := os.Stat(out); !os.IsNotExist(serr) {
				t.Errorf("output directory exists after the refusal (stat: %v)", serr)
			}
		})
	}
}
