package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const tinyModel = "../../testdata/tiny-llama-fortunes/bf16"

// copyModel copies the tiny checkpoint into a temporary directory and lets
// edit change it.
func copyModel(t *testing.T, edit func(dir string)) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(tinyModel, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(dir)
	}
	return dir
}

func editConfig(t *testing.T, dir string, key string, value any) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, _ := os.ReadFile(p)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	b, _ = json.Marshal(m)
	os.WriteFile(p, b, 0o644)
}

// TestBadInputs checks that each bad input gets one clear line naming the
// problem, a non-zero exit, and leaves no output behind.
func TestBadInputs(t *testing.T) {
	tests := []struct {
		name  string
		model func(t *testing.T) string
		args  []string
		want  []string // substrings of the one-line message
	}{
		{"missing config.json", func(t *testing.T) string {
			return copyModel(t, func(d string) { os.Remove(filepath.Join(d, "config.json")) })
		}, nil, []string{"config.json"}},
		{"missing safetensors shard", func(t *testing.T) string {
			return copyModel(t, func(d string) {
				os.Rename(filepath.Join(d, "model.safetensors"), filepath.Join(d, "model-00001-of-00002.safetensors"))
				idx := `{"metadata":{},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}}`
				os.WriteFile(filepath.Join(d, "model.safetensors.index.json"), []byte(idx), 0o644)
			})
		}, nil, []string{"model-00002-of-00002.safetensors"}},
		{"truncated safetensors", func(t *testing.T) string {
			return copyModel(t, func(d string) { os.Truncate(filepath.Join(d, "model.safetensors"), 100000) })
		}, nil, []string{"model.safetensors"}},
		{"unknown architecture", func(t *testing.T) string {
			return copyModel(t, func(d string) { editConfig(t, d, "model_type", "gpt2") })
		}, nil, []string{"gpt2", "config.json"}},
		{"hub id", func(t *testing.T) string { return "meta-llama/Llama-3.2-1B" }, nil,
			[]string{"meta-llama/Llama-3.2-1B is not a directory here", "download", "--model DIR"}},
		{"model is a file", func(t *testing.T) string {
			return filepath.Join(copyModel(t, nil), "model.safetensors")
		}, nil, []string{"model.safetensors is a file, not a checkpoint directory"}},
		{"no tokenizer", func(t *testing.T) string {
			return copyModel(t, func(d string) { os.Remove(filepath.Join(d, "tokenizer.json")) })
		}, nil, []string{"no tokenizer.json", "add it"}},
		{"corrupt tokenizer.json", func(t *testing.T) string {
			return copyModel(t, func(d string) { os.WriteFile(filepath.Join(d, "tokenizer.json"), []byte(`{"model": {`), 0o644) })
		}, nil, []string{"tokenizer.json", "replace the file"}},
		{"chunks beyond layers", func(t *testing.T) string { return copyModel(t, nil) }, []string{"--chunk", "5"}, []string{"chunk", "4"}},
		{"batch beyond context", func(t *testing.T) string { return copyModel(t, nil) }, []string{"--batch", "128", "--context", "64"}, []string{"batch", "128", "64"}},
		{"bad lut", func(t *testing.T) string { return copyModel(t, nil) }, []string{"--lut2", "5"}, []string{"LUT bits"}},
		{"bad fp16 scale", func(t *testing.T) string { return copyModel(t, nil) }, []string{"--fp16-scale", "2"}, []string{"--fp16-scale", "(0, 1]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model := tc.model(t)
			out := filepath.Join(t.TempDir(), "out")
			var so, se bytes.Buffer
			args := append([]string{"convert", "--model", model, "--output", out, "--skip-check"}, tc.args...)
			code := run(args, &so, &se)
			if code == 0 {
				t.Fatalf("exit 0; stderr:\n%s", se.String())
			}
			msg := strings.TrimSpace(se.String())
			lines := strings.Split(msg, "\n")
			last := lines[len(lines)-1]
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("message %q lacks %q", last, w)
				}
			}
			if !strings.HasPrefix(last, "anemll convert: ") {
				t.Errorf("message %q is not one prefixed line", last)
			}
			if ents, err := os.ReadDir(out); err == nil {
				for _, e := range ents {
					if strings.HasSuffix(e.Name(), ".mlpackage") {
						t.Errorf("left %s behind", e.Name())
					}
				}
			}
		})
	}
}

func TestOutputIsAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, []byte("x"), 0o644)
	for _, extra := range [][]string{nil, {"--part", "1"}} {
		var so, se bytes.Buffer
		args := append([]string{"convert", "--model", tinyModel, "--output", f, "--skip-check"}, extra...)
		if code := run(args, &so, &se); code == 0 || !strings.Contains(se.String(), "is a file") {
			t.Errorf("%v: exit %d, stderr %q", extra, code, se.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	out := t.TempDir()
	for _, args := range [][]string{{}, {"nope"}, {"convert"}, {"convert", "--model", tinyModel, "--part", "9"}, {"inspect"},
		{"convert", "--model", tinyModel, "--output", out, "--context", "0"},
		{"convert", "--model", tinyModel, "--output", out, "--batch-size", "-1"},
		{"convert", "--model", tinyModel, "--output", out, "--state-length", "-64"},
		{"convert", "--model", tinyModel, "--output", out, "--calibration-tokens", "-1"},
		{"convert", "--model", tinyModel, "--output", out, "--chunk", "auto", "--max-chunk-mb", "0"},
		{"chat", "--dir", out, "--prompt", "hi", "--max-tokens", "-1"},
		{"chat", "--dir", out, "--prompt", "hi", "--temperature", "-0.5"},
		{"chat", "--dir", out, "--prompt", "hi", "--temperature", "NaN"},
		{"chat", "--dir", out, "--prompt", "hi", "--top-p", "0"},
		{"chat", "--dir", out, "--prompt", "hi", "--top-p", "1.5"},
	} {
		var so, se bytes.Buffer
		if code := run(args, &so, &se); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, se.String())
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("usage errors wrote %d entries into the output directory", len(ents))
	}
}

// TestConvertPartAndInspect converts the embeddings part and inspects it.
func TestConvertPartAndInspect(t *testing.T) {
	out := t.TempDir()
	var so, se bytes.Buffer
	if code := run([]string{"convert", "--part", "1", "--model", tinyModel, "--output", out, "--batch-size", "32"}, &so, &se); code != 0 {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	pkg := filepath.Join(out, "llama_embeddings.mlpackage")
	so.Reset()
	if code := run([]string{"inspect", pkg}, &so, &se); code != 0 {
		t.Fatalf("inspect exit %d: %s", code, se.String())
	}
	for _, want := range []string{"input  input_ids", "multiArray int32 [1, 1] enumerated {[1, 1], [1, 32]}", "output hidden_states", "com.anemll.context_length = \"512\""} {
		if !strings.Contains(so.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, so.String())
		}
	}
	so.Reset()
	if code := run([]string{"inspect", "--json", "--program", pkg}, &so, &se); code != 0 {
		t.Fatalf("inspect --json exit %d", code)
	}
	var js map[string]any
	if err := json.Unmarshal(so.Bytes(), &js); err != nil || js["program"] == nil || js["specification_version"].(float64) != 9 {
		t.Errorf("bad JSON (%v): %.300s", err, so.String())
	}
}

// TestChatOneShot runs the whole pipeline on the bundled model, then chats
// greedily with it.
func TestChatOneShot(t *testing.T) {
	out := t.TempDir()
	var so, se bytes.Buffer
	if code := run([]string{"convert", "--model", tinyModel, "--output", out, "--context", "128", "--batch", "32"}, &so, &se); code != 0 {
		t.Fatalf("convert exit %d:\n%s", code, se.String())
	}
	if !strings.Contains(so.String(), "reference with weights read back from the packages") {
		t.Errorf("step 8 did not verify:\n%s", so.String())
	}
	so.Reset()
	se.Reset()
	if code := run([]string{"chat", "--meta", filepath.Join(out, "meta.yaml"), "--prompt", "Q: What do you get when", "--no-template", "--max-tokens", "12"}, &so, &se); code != 0 {
		t.Fatalf("chat exit %d:\n%s", code, se.String())
	}
	if !strings.HasPrefix(so.String(), "Q: What do you get when") || len(so.String()) < len("Q: What do you get when")+10 {
		t.Errorf("chat output %q", so.String())
	}
	if !strings.Contains(se.String(), "decode") || !strings.Contains(se.String(), "tok/s") {
		t.Errorf("chat printed no speed: %q", se.String())
	}
	// Interactive mode reads lines until an empty one.
	chatInput = strings.NewReader("Tell me a joke\n\n")
	defer func() { chatInput = os.Stdin }()
	so.Reset()
	if code := run([]string{"chat", "--dir", out, "--max-tokens", "8"}, &so, &se); code != 0 {
		t.Fatalf("interactive chat exit %d:\n%s", code, se.String())
	}
	if strings.Count(so.String(), "\n> ") != 2 {
		t.Errorf("interactive transcript %q", so.String())
	}
	// Ctrl-C during an answer (the interrupt hook, as the signal handler
	// calls it) stops that answer after the token being made; the chat
	// goes on to the next message.
	chatInput = strings.NewReader("Tell me a joke\nAnother one\n\n")
	fired := false
	chatTokenHook = func(n int) {
		if n == 3 && !fired {
			fired = true
			if h := interruptHook.Load(); h == nil || !(*h)() {
				t.Error("no interrupt hook during an interactive answer")
			}
		}
	}
	so.Reset()
	se.Reset()
	code := run([]string{"chat", "--dir", out, "--max-tokens", "8"}, &so, &se)
	chatTokenHook = nil
	if code != 0 {
		t.Fatalf("interactive chat with Ctrl-C: exit %d:\n%s", code, se.String())
	}
	if interruptHook.Load() != nil {
		t.Error("interrupt hook left set after the chat")
	}
	var stops []string
	for _, line := range strings.Split(se.String(), "\n") {
		if i := strings.Index(line, "new tokens"); i >= 0 {
			stops = append(stops, line[strings.LastIndex(line[:i], ";")+2:])
		}
	}
	if len(stops) != 2 || !strings.HasPrefix(stops[0], "3 new tokens") || !strings.HasSuffix(stops[0], "stop: Ctrl-C]") ||
		strings.Contains(stops[1], "Ctrl-C") {
		t.Errorf("answers ended %q, want the first after 3 tokens by Ctrl-C and the second on its own", stops)
	}
	// Without the tokenizer beside the packages, chat says where it looked
	// and what to do.
	os.Remove(filepath.Join(out, "tokenizer.json"))
	se.Reset()
	code = run([]string{"chat", "--dir", out, "--prompt", "hi"}, &so, &se)
	if msg := strings.TrimSpace(se.String()); code != 1 || !strings.Contains(msg, filepath.Join(out, "tokenizer.json")) || !strings.Contains(msg, "--tokenizer DIR") {
		t.Errorf("chat without tokenizer.json: exit %d, %q", code, msg)
	}
}

// TestVerifyCommand converts the tiny model in fp16 and verifies it from
// the command line, with a token file and both weight sources.
func TestVerifyCommand(t *testing.T) {
	out := t.TempDir()
	var so, se bytes.Buffer
	for _, part := range []string{"1", "2", "2_prefill", "3"} {
		if code := run([]string{"convert", "--part", part, "--model", tinyModel, "--output", out, "--context-length", "64", "--batch-size", "16"}, &so, &se); code != 0 {
			t.Fatalf("convert --part %s: exit %d: %s", part, code, se.String())
		}
	}
	tokens := filepath.Join(t.TempDir(), "ids.txt")
	os.WriteFile(tokens, []byte("1016, 81, 58, 358, 654, 771, 263, 682, 686, 602, 272, 466, 453, 661, 63, 10, 65, 58"), 0o644)
	for _, w := range []string{"checkpoint", "package"} {
		so.Reset()
		if code := run([]string{"verify", "--model", tinyModel, "--dir", out, "--tokens", tokens, "--weights", w, "--max-mean-kl", "1e-4"}, &so, &se); code != 0 {
			t.Fatalf("verify --weights %s: exit %d: %s\n%s", w, code, se.String(), so.String())
		}
		if !strings.Contains(so.String(), "verify: 18 tokens") || !strings.Contains(so.String(), "prefill ") {
			t.Errorf("verify output:\n%s", so.String())
		}
	}
	// An impossible threshold fails with a non-zero exit.
	se.Reset()
	if code := run([]string{"verify", "--model", tinyModel, "--dir", out, "--tokens", tokens, "--max-mean-kl", "1e-12"}, &so, &se); code == 0 || !strings.Contains(se.String(), "mean KL") {
		t.Errorf("threshold not enforced: exit %d, %q", code, se.String())
	}
	if code := run([]string{"verify", "--model", tinyModel, "--dir", out, "--weights", "nope"}, &so, &se); code != 2 {
		t.Errorf("bad --weights: exit %d", code)
	}
}

// TestCombineCommandOnAppleMadePackages combines coremltools-made FFN and
// prefill chunks from the command line.
func TestCombineCommandOnAppleMadePackages(t *testing.T) {
	out := t.TempDir()
	var so, se bytes.Buffer
	if code := run([]string{"combine", "--chunk", "2", "--lut", "4", "--input", "../../testdata/anemll-tiny-random/packages", "--output", out}, &so, &se); code != 0 {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	so.Reset()
	if code := run([]string{"inspect", filepath.Join(out, "llama_FFN_PF_lut4_chunk_01of02.mlpackage")}, &so, &se); code != 0 {
		t.Fatalf("inspect exit %d", code)
	}
	for _, want := range []string{"functions: infer, prefill (default infer)", "blobs shared between functions: 15 of 15", `"Anemll Model: Multifunction FFN+Prefill"`, `com.anemll.batch_size = "64"`} {
		if !strings.Contains(so.String(), want) {
			t.Errorf("combined package lacks %q:\n%s", want, so.String())
		}
	}
}

// TestLowMemoryFlag: --low-memory (one chunk's weights loaded at a time)
// on convert's step 8, verify and chat prints the same numbers and text
// as the default mode, bit for bit.
func TestLowMemoryFlag(t *testing.T) {
	out := t.TempDir()
	var so, se bytes.Buffer
	if code := run([]string{"convert", "--model", tinyModel, "--output", out, "--context", "128", "--batch", "32", "--low-memory"}, &so, &se); code != 0 {
		t.Fatalf("convert --low-memory exit %d:\n%s", code, se.String())
	}
	if !strings.Contains(so.String(), "reference with weights read back from the packages") {
		t.Errorf("step 8 did not verify:\n%s", so.String())
	}
	same := func(args ...string) string {
		t.Helper()
		var outs [2]string
		for i, extra := range [][]string{nil, {"--low-memory"}} {
			var so, se bytes.Buffer
			if code := run(append(append([]string{}, args...), extra...), &so, &se); code != 0 {
				t.Fatalf("%v %v: exit %d:\n%s", args, extra, code, se.String())
			}
			outs[i] = so.String()
			if i == 1 && args[0] == "chat" && !strings.Contains(se.String(), "low-memory mode") {
				t.Errorf("chat --low-memory did not say so: %q", se.String())
			}
		}
		if outs[0] != outs[1] {
			t.Errorf("%v: --low-memory changes the output:\n%s\nvs\n%s", args, outs[0], outs[1])
		}
		return outs[0]
	}
	if got := same("verify", "--model", tinyModel, "--dir", out, "--weights", "package"); !strings.Contains(got, "decode") {
		t.Errorf("verify output %q", got)
	}
	if got := same("chat", "--dir", out, "--prompt", "Q: What do you get when", "--no-template", "--max-tokens", "12"); len(got) < 30 {
		t.Errorf("chat output %q", got)
	}
}

// TestHelp checks that -h on every command exits 0 and prints the
// command's synopsis first, flags below it.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "-h"}, {"bench", "lut", "-h"}, {"chat", "-h"}, {"combine", "-h"}, {"compile", "-h"},
		{"convert", "-h"}, {"inspect", "-h"}, {"verify", "-h"},
	} {
		var so, se bytes.Buffer
		if code := run(args, &so, &se); code != 0 {
			t.Errorf("%v: exit %d, want 0 (stderr %q)", args, code, se.String())
		}
		first, _, _ := strings.Cut(se.String(), "\n")
		if want := "usage: anemll " + args[0]; !strings.HasPrefix(first, want) {
			t.Errorf("%v: first line %q, want it to start with %q", args, first, want)
		}
		if !strings.Contains(se.String(), "\n  -") {
			t.Errorf("%v: no flags listed:\n%s", args, se.String())
		}
	}
}

// TestMissingMeta checks that verify and chat, given a meta.yaml that does
// not exist, say so in one line that names it and says what to give.
func TestMissingMeta(t *testing.T) {
	meta := filepath.Join(t.TempDir(), "meta.yaml")
	for _, args := range [][]string{
		{"verify", "--model", tinyModel, "--meta", meta},
		{"chat", "--meta", meta, "--prompt", "hi"},
	} {
		var so, se bytes.Buffer
		code := run(args, &so, &se)
		msg := strings.TrimSpace(se.String())
		if code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, meta) || !strings.Contains(msg, "meta.yaml that convert wrote") {
			t.Errorf("%s: exit %d, message %q", args[0], code, msg)
		}
	}
}
