package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
)

// convertOK runs convert with args (plus --model and --output) and returns
// the output directory and stderr; it fails the test on a non-zero exit.
func convertOK(t *testing.T, model string, args ...string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	var so, se bytes.Buffer
	all := append([]string{"convert", "--model", model, "--output", out}, args...)
	if code := run(all, &so, &se); code != 0 {
		t.Fatalf("%v: exit %d\n%s", args, code, se.String())
	}
	return out, se.String()
}

// convertFails runs convert and wants exit code want and a message
// containing every string of msg.
func convertFails(t *testing.T, want int, msg []string, args ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	var so, se bytes.Buffer
	all := append([]string{"convert", "--model", tinyModel, "--output", out, "--skip-check"}, args...)
	code := run(all, &so, &se)
	if code != want {
		t.Errorf("%v: exit %d, want %d\n%s", args, code, want, se.String())
	}
	for _, m := range msg {
		if !strings.Contains(se.String(), m) {
			t.Errorf("%v: message lacks %q:\n%s", args, m, se.String())
		}
	}
}

func packages(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mlpackage") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func readMeta(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "meta.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lutRows returns, for every palettized weight of a package, the number of
// LUTs along the output channels and the number of output channels.
func lutRows(t *testing.T, path string) map[string][2]int64 {
	t.Helper()
	pkg, err := coreml.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer pkg.Close()
	out := map[string][2]int64{}
	for _, f := range pkg.Program.Functions {
		for _, op := range f.Body.Ops {
			if op.Type == "constexpr_lut_to_dense" {
				out[op.Name] = [2]int64{op.Input("lut")[0].Value.Type.Shape[0], op.Input("indices")[0].Value.Type.Shape[0]}
			}
		}
	}
	return out
}

var small = []string{"--context", "64", "--batch", "16", "--skip-check"}

// TestLUTGroupFlags: --lutN bits,group sets that part's channels per
// table; ",0" and ",tensor" mean one table per tensor; meta.yaml records
// *_per_channel as ANEMLL does.
func TestLUTGroupFlags(t *testing.T) {
	out, _ := convertOK(t, tinyModel, append(small, "--chunk", "1", "--lut1", "6,4", "--lut2", "4,16", "--lut3", "6,tensor")...)
	for pkg, group := range map[string]int64{
		"llama_embeddings_lut6.mlpackage":          4,
		"llama_FFN_PF_lut4_chunk_01of01.mlpackage": 16,
		"llama_lm_head_lut6.mlpackage":             -1, // one table per tensor
	} {
		rows := lutRows(t, filepath.Join(out, pkg))
		if len(rows) == 0 {
			t.Errorf("%s has no palettized weights", pkg)
		}
		for name, r := range rows {
			want := int64(1)
			if group > 0 {
				want = r[1] / group
			}
			if r[0] != want {
				t.Errorf("%s: %s has %d tables for %d channels, want %d", pkg, name, r[0], r[1], want)
			}
		}
	}
	meta := readMeta(t, out)
	for _, l := range []string{"lut_embeddings_per_channel: 4\n", "lut_ffn_per_channel: 16\n", "lut_lmhead_per_channel: 0\n"} {
		if !strings.Contains(meta, l) {
			t.Errorf("meta.yaml lacks %q:\n%s", l, meta)
		}
	}
	// "bits,0" is per tensor too; plain bits keep --lut-group-size and
	// write no *_per_channel key.
	out, _ = convertOK(t, tinyModel, append(small, "--chunk", "1", "--lut2", "4,0", "--lut3", "6", "--only", "3")...)
	for name, r := range lutRows(t, filepath.Join(out, "llama_FFN_lut4_chunk_01of01.mlpackage")) {
		if r[0] != 1 {
			t.Errorf("--lut2 4,0: %s has %d tables", name, r[0])
		}
	}
	for _, bad := range [][]string{{"--lut2", "4,x"}, {"--lut2", "5,4"}, {"--lut2", "none,4"}, {"--lut3", "6,-2"}} {
		convertFails(t, 2, []string{"LUT"}, bad...)
	}
}

// TestNoLUT: --no-lut converts every part in fp16 and contradicts LUT flags.
func TestNoLUT(t *testing.T) {
	out, _ := convertOK(t, tinyModel, append(small, "--no-lut")...)
	for _, p := range packages(t, out) {
		if strings.Contains(p, "_lut") {
			t.Errorf("--no-lut wrote %s", p)
		}
	}
	if m := readMeta(t, out); !strings.Contains(m, "lut_ffn: none") || !strings.Contains(m, "lut_lmhead: none") {
		t.Errorf("meta.yaml:\n%s", m)
	}
	convertFails(t, 2, []string{"--no-lut"}, "--no-lut", "--lut2", "4")
}

// TestChunkNo: --chunk-no converts only that chunk, in the pipeline and
// with --part; a chunk beyond the count is refused.
func TestChunkNo(t *testing.T) {
	out, _ := convertOK(t, tinyModel, append(small, "--chunk", "2", "--chunk-no", "2", "--lut2", "none")...)
	got := strings.Join(packages(t, out), " ")
	want := "llama_FFN_PF_chunk_02of02.mlpackage llama_FFN_chunk_02of02.mlpackage llama_embeddings.mlpackage llama_lm_head_lut6.mlpackage llama_prefill_chunk_02of02.mlpackage"
	if got != want {
		t.Errorf("--chunk-no 2 wrote %s\nwant %s", got, want)
	}
	out, _ = convertOK(t, tinyModel, "--part", "2", "--chunk", "2", "--chunk-no", "1", "--context", "64", "--batch", "16")
	if got := strings.Join(packages(t, out), " "); got != "llama_FFN_chunk_01of02.mlpackage" {
		t.Errorf("--part 2 --chunk-no 1 wrote %s", got)
	}
	convertFails(t, 1, []string{"--chunk-no 3", "2 chunks"}, "--chunk", "2", "--chunk-no", "3")
	convertFails(t, 2, []string{"--chunk-no"}, "--part", "2", "--chunk", "2", "--chunk-no", "3")
}

// rewriteWithout copies the tiny checkpoint without the named tensors.
func rewriteWithout(t *testing.T, drop ...string) string {
	t.Helper()
	dir := copyModel(t, nil)
	ck, err := hf.OpenCheckpoint(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var ts []hf.WriteTensor
	for _, n := range ck.Names() {
		skip := false
		for _, d := range drop {
			skip = skip || n == d
		}
		if skip {
			continue
		}
		info, _ := ck.Info(n)
		raw, err := ck.Raw(n)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, hf.BytesTensor(n, info.DType, info.Shape, append([]byte(nil), raw...)))
	}
	if err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAllowMissingWeights: a missing norm gain is refused by default with a
// hint, converted with the flag (gain 1) and a warning naming it; a missing
// projection is refused even with the flag.
func TestAllowMissingWeights(t *testing.T) {
	model := rewriteWithout(t, "model.layers.1.post_attention_layernorm.weight")
	var so, se bytes.Buffer
	out := filepath.Join(t.TempDir(), "out")
	code := run(append([]string{"convert", "--model", model, "--output", out}, small...), &so, &se)
	if code != 1 || !strings.Contains(se.String(), "--allow-missing-weights") || !strings.Contains(se.String(), "model.layers.1.post_attention_layernorm.weight") {
		t.Errorf("without the flag: exit %d\n%s", code, se.String())
	}
	out, log := convertOK(t, model, append(small, "--allow-missing-weights", "--lut2", "none", "--chunk", "1")...)
	if !strings.Contains(log, "lacks 1 tensors") || !strings.Contains(log, "model.layers.1.post_attention_layernorm.weight") {
		t.Errorf("no warning naming the tensor:\n%s", log)
	}
	if len(packages(t, out)) != 5 {
		t.Errorf("wrote %v", packages(t, out))
	}
	model = rewriteWithout(t, "model.layers.0.mlp.up_proj.weight")
	se.Reset()
	code = run(append([]string{"convert", "--model", model, "--output", filepath.Join(t.TempDir(), "o"), "--allow-missing-weights"}, small...), &so, &se)
	if code != 1 || !strings.Contains(se.String(), "has no default") {
		t.Errorf("missing projection with the flag: exit %d\n%s", code, se.String())
	}
}

// TestCompatibilityFlags: --skip-anemll-dedup and the Python-only flags of
// convert_model.sh are accepted with one note each; unknown flags still
// fail with the usage text.
func TestCompatibilityFlags(t *testing.T) {
	args := append(small, "--only", "7", "--skip-anemll-dedup", "--force-mlprogram-compile", "--dynamic-prefill-slice",
		"--static-prefill-slice", "--single-cache", "--split-rotate", "--fp16-scale", "0.5", "--clamp", "55000")
	_, log := convertOK(t, tinyModel, args...)
	for _, f := range []string{"--skip-anemll-dedup", "--force-mlprogram-compile", "--dynamic-prefill-slice", "--static-prefill-slice",
		"--single-cache", "--split-rotate", "--clamp"} {
		if strings.Count(log, "note: "+f+" accepted") != 1 {
			t.Errorf("no single note for %s:\n%s", f, log)
		}
	}
	// --fp16-scale is real here: the given α is used and printed.
	if !strings.Contains(log, "fp16 scale: α = 0.5 (given)") {
		t.Errorf("--fp16-scale 0.5 not applied:\n%s", log)
	}
	convertFails(t, 2, []string{"flag provided but not defined: -bogus", "usage: anemll convert"}, "--bogus")
	convertFails(t, 2, []string{"--chunk"}, "--chunk", "x")
}

// TestArgmaxFlag: --argmax gives the pipeline's and --part 3's LM head
// ANEMLL 0.3.5's outputs and records it in meta.yaml; greedy chat prints
// the same text as with the logits head, and sampling is refused.
func TestArgmaxFlag(t *testing.T) {
	out, _ := convertOK(t, tinyModel, "--part", "3", "--argmax", "--lut", "6")
	pkg, err := coreml.Open(filepath.Join(out, "llama_lm_head_lut6.mlpackage"))
	if err != nil {
		t.Fatal(err)
	}
	d := pkg.Description
	pkg.Close()
	if len(d.Outputs) != 2 || d.Outputs[0].Name != "argmax_idx" || d.Outputs[1].Name != "argmax_val" || d.Metadata.UserDefined["com.anemll.argmax_in_model"] != "true" {
		t.Errorf("outputs %+v metadata %v", d.Outputs, d.Metadata.UserDefined)
	}
	convertFails(t, 2, []string{"--argmax"}, "--part", "2", "--argmax")

	plain, _ := convertOK(t, tinyModel, "--context", "128", "--batch", "32")
	am, _ := convertOK(t, tinyModel, "--context", "128", "--batch", "32", "--argmax")
	if !strings.Contains(readMeta(t, am), "argmax_in_model: true") {
		t.Errorf("meta.yaml lacks argmax_in_model")
	}
	chat := func(dir string, extra ...string) (string, string, int) {
		var so, se bytes.Buffer
		code := run(append([]string{"chat", "--meta", filepath.Join(dir, "meta.yaml"), "--prompt", "Q: What do you get when", "--no-template", "--max-tokens", "24"}, extra...), &so, &se)
		return so.String(), se.String(), code
	}
	a, _, c1 := chat(plain)
	b, log, c2 := chat(am)
	if c1 != 0 || c2 != 0 || a != b || len(a) < 30 {
		t.Errorf("greedy chat differs (exit %d, %d):\n logits: %q\n argmax: %q", c1, c2, a, b)
	}
	if !strings.Contains(log, "greedy") {
		t.Errorf("chat did not say it decodes greedily:\n%s", log)
	}
	if _, log, code := chat(am, "--temperature", "0.7"); code != 2 || !strings.Contains(log, "sampling") {
		t.Errorf("sampling with an argmax head: exit %d\n%s", code, log)
	}
}

// TestMonolithicFlag: --monolithic follows convert_monolith.sh (files,
// --lut for every part with --lut-embeddings/--lut-lmhead overrides,
// meta.yaml), chat runs it, and chunk flags are refused.
func TestMonolithicFlag(t *testing.T) {
	out, log := convertOK(t, tinyModel, "--monolithic", "--context", "64", "--batch", "16", "--lut-embeddings", "none", "--lut-lmhead", "6")
	if got := strings.Join(packages(t, out), " "); got != "llama_monolithic_full_lut4.mlpackage llama_monolithic_lut4.mlpackage llama_monolithic_prefill_lut4.mlpackage" {
		t.Errorf("wrote %s", got)
	}
	if !strings.Contains(log, "Step 6: Verifying") {
		t.Errorf("no verification step:\n%s", log)
	}
	meta := readMeta(t, out)
	for _, l := range []string{"model_type: monolithic\n", "lut_bits: 4\n", "lut_embeddings: none\n", "lut_lmhead: 6\n", "monolithic_model: llama_monolithic_full_lut4.mlmodelc\n", "      - prefill\n"} {
		if !strings.Contains(meta, l) {
			t.Errorf("meta.yaml lacks %q:\n%s", l, meta)
		}
	}
	var so, se bytes.Buffer
	if code := run([]string{"chat", "--dir", out, "--prompt", "Q: What", "--no-template", "--max-tokens", "8"}, &so, &se); code != 0 || !strings.Contains(se.String(), "monolithic") {
		t.Errorf("chat exit %d:\n%s", code, se.String())
	}
	so.Reset()
	if code := run([]string{"compile", "--dir", out}, &so, &se); code != 0 || !strings.Contains(so.String(), "1 packages") {
		t.Errorf("compile of a monolithic directory: exit %d %q", code, so.String())
	}
	convertFails(t, 2, []string{"monolithic"}, "--monolithic", "--chunk", "2")
	convertFails(t, 2, []string{"--monolithic"}, "--lut-embeddings", "4")
	out, _ = convertOK(t, tinyModel, "--part", "monolithic", "--argmax", "--context", "64", "--batch", "16")
	out2, _ := convertOK(t, tinyModel, "--part", "monolithic_prefill", "--lut", "4", "--context", "64", "--batch", "16")
	if p := packages(t, out); len(p) != 1 || p[0] != "llama_monolithic.mlpackage" {
		t.Errorf("--part monolithic wrote %v", p)
	}
	if p := packages(t, out2); len(p) != 1 || p[0] != "llama_monolithic_prefill_lut4.mlpackage" {
		t.Errorf("--part monolithic_prefill wrote %v", p)
	}
}

// TestChunkAutoFlag: --chunk auto prints the plan and converts with its
// count; a limit the embeddings alone exceed is refused naming --lut1.
func TestChunkAutoFlag(t *testing.T) {
	out, log := convertOK(t, tinyModel, append(small, "--chunk", "auto", "--max-chunk-mb", "1")...)
	if !strings.Contains(log, "--chunk auto: 1 chunk(s)") || !strings.Contains(log, "llama_FFN_PF_lut4_chunk_01of01.mlpackage") {
		t.Errorf("plan not printed:\n%s", log)
	}
	if !strings.Contains(readMeta(t, out), "num_chunks: 1\n") {
		t.Errorf("meta.yaml:\n%s", readMeta(t, out))
	}
	convertFails(t, 2, []string{"--max-chunk-mb"}, "--chunk", "auto", "--max-chunk-mb", "0")
}
