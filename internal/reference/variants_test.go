package reference_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
)

// TestMistralWindow: with sliding_window null or ≥ the sequence, Mistral is
// exactly the LLaMA computation of the same weights; with window 4 the
// first 4 positions are unchanged and every later one differs from plain
// causal attention and equals the brute-force masked computation.
func TestMistralWindow(t *testing.T) {
	d := tinyDims
	ts := tensorSet{prefix: "model.", headName: "lm_head.weight"}
	shapes := ts.shapes(d)
	tensors := randomTensors(shapes, false, 42)
	run := func(cfg map[string]any) ([][]float32, *reference.Model) {
		m := openModel(t, writeCheckpoint(t, cfg, tensors, shapes), reference.Options{})
		out, err := m.Forward(synthIDs)
		if err != nil {
			t.Fatal(err)
		}
		return out, m
	}
	llama, _ := run(baseConfig("llama", "LlamaForCausalLM", d))
	mistral := baseConfig("mistral", "MistralForCausalLM", d)
	for _, w := range []any{nil, len(synthIDs), 100} {
		got, m := run(with(mistral, "sliding_window", w))
		if m.Family() != "mistral" {
			t.Fatalf("family %q", m.Family())
		}
		for p := range got {
			if !slices.Equal(got[p], llama[p]) {
				t.Fatalf("sliding_window %v: position %d differs from llama", w, p)
			}
		}
	}
	const W = 4
	got, m := run(with(mistral, "sliding_window", W))
	want := naiveForward(m.Config(), uniformNaive(naiveSpec{prefix: "model.", headName: "lm_head.weight"}, m.Config(), W),
		func(n string) []float32 { return tensors[n] }, synthIDs)
	worst, scale := maxDiff(got, want)
	if worst > 1e-5*max(1, scale) {
		t.Errorf("window %d: differs from the brute-force masked computation by %g", W, worst)
	}
	for p := range got {
		var d float64
		for v := range got[p] {
			d = max(d, math.Abs(float64(got[p][v]-llama[p][v])))
		}
		switch {
		case p < W && d != 0:
			t.Errorf("position %d (inside the window) differs from causal by %g", p, d)
		case p >= W && d < 1e-3:
			t.Errorf("position %d (past the window) differs from causal by only %g", p, d)
		}
	}
	checkStepAndLazy(t, m, writeCheckpoint(t, with(mistral, "sliding_window", W), tensors, shapes), got)
}

// mapWeights serves tensors from maps, without the optional methods;
// hasWeights adds Has, splitWeights SeparateLMHead.
type mapWeights struct {
	t     map[string][]float32
	s     map[string][]int64
	split bool
}

func (w mapWeights) Tensor(name string) ([]float32, []int64, error) {
	v, ok := w.t[name]
	if !ok {
		return nil, nil, errors.New("no tensor " + name)
	}
	return v, w.s[name], nil
}

type hasWeights struct{ mapWeights }

func (w hasWeights) Has(name string) bool { _, ok := w.t[name]; return ok }

type splitWeights struct{ mapWeights }

func (w splitWeights) SeparateLMHead() bool { return w.split }

// TestGemma3Nested: the text tower of Gemma3ForConditionalGeneration under
// either weight layout (with vision tensors beside it) computes exactly
// what the same weights as gemma3_text compute, with or without Has.
func TestGemma3Nested(t *testing.T) {
	d := tinyDims
	ts := tensorSet{prefix: "model.", gemma: true, qkNorm: true, tied: true}
	shapes := ts.shapes(d)
	tensors := randomTensors(shapes, true, 9)
	textCfg := gemmaConfig(d)
	m := openModel(t, writeCheckpoint(t, textCfg, tensors, shapes), reference.Options{})
	want, err := m.Forward(synthIDs)
	if err != nil {
		t.Fatal(err)
	}
	inner := with(textCfg)
	delete(inner, "architectures")
	delete(inner, "tie_word_embeddings")
	delete(inner, "torch_dtype")
	outer := map[string]any{"model_type": "gemma3", "architectures": []string{"Gemma3ForConditionalGeneration"},
		"text_config": inner, "vision_config": map[string]any{"model_type": "siglip_vision_model"},
		"tie_word_embeddings": true, "torch_dtype": "bfloat16"}
	for _, layout := range []struct{ text, vision string }{
		{"model.language_model.", "model.vision_tower.vision_model.embeddings.patch_embedding.weight"},
		{"language_model.model.", "vision_tower.vision_model.embeddings.patch_embedding.weight"},
	} {
		t2, s2 := map[string][]float32{}, map[string][]int64{}
		for n, v := range tensors {
			t2[layout.text+strings.TrimPrefix(n, "model.")] = v
			s2[layout.text+strings.TrimPrefix(n, "model.")] = shapes[n]
		}
		t2[layout.vision], s2[layout.vision] = make([]float32, 6), []int64{2, 3}
		dir := writeCheckpoint(t, outer, t2, s2)
		nm := openModel(t, dir, reference.Options{})
		seen := map[string]bool{}
		nm.Observe(func(name string, _ []float32) { seen[name] = true })
		got, err := nm.Forward(synthIDs)
		if err != nil {
			t.Fatal(err)
		}
		for p := range want {
			if !slices.Equal(got[p], want[p]) {
				t.Fatalf("%s: position %d differs from gemma3_text", layout.text, p)
			}
		}
		if !seen[layout.text+"layers.2.mlp.down_proj.weight"] || !seen["lm_head.weight"] {
			t.Errorf("%s: observer names %v lack the checkpoint's names", layout.text, seen)
		}
		checkStepAndLazy(t, nm, dir, want)
		// Without Has the layout is found by probing.
		cfg, err := hf.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		pm, err := reference.New(cfg, mapWeights{t: t2, s: s2})
		if err != nil {
			t.Fatal(err)
		}
		if got, err = pm.Forward(synthIDs); err != nil || !slices.Equal(got[len(got)-1], want[len(want)-1]) {
			t.Errorf("%s without Has: %v or different logits", layout.text, err)
		}
		// A tower in neither place names both.
		t3, s3 := map[string][]float32{}, map[string][]int64{}
		for n, v := range tensors {
			t3["text."+n], s3["text."+n] = v, shapes[n]
		}
		_, err = reference.New(cfg, hasWeights{mapWeights{t: t3, s: s3}})
		if err == nil || !strings.Contains(err.Error(), "model.language_model.embed_tokens.weight") ||
			!strings.Contains(err.Error(), "language_model.model.embed_tokens.weight") {
			t.Errorf("missing text tower: %v", err)
		}
	}
}

// TestSeparateLMHead: a tied model reads its head from lm_head.weight when
// the weights say SeparateLMHead, and from the embeddings otherwise.
func TestSeparateLMHead(t *testing.T) {
	d := tinyDims
	ts := tensorSet{prefix: "model.", headName: "lm_head.weight", qkvBias: true, tied: true}
	shapes := ts.shapes(d)
	tensors := randomTensors(shapes, false, 3)
	cfg, err := hf.ParseConfig(mustJSON(t, with(baseConfig("qwen2", "Qwen2ForCausalLM", d), "tie_word_embeddings", true)))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]float32, d.vocab*d.hidden)
	for i := range head {
		head[i] = tensors["model.embed_tokens.weight"][i] * float32(1+i%3)
	}
	t2, s2 := map[string][]float32{"lm_head.weight": head}, map[string][]int64{"lm_head.weight": {int64(d.vocab), int64(d.hidden)}}
	for n, v := range tensors {
		t2[n], s2[n] = v, shapes[n]
	}
	for _, split := range []bool{false, true} {
		for _, lazy := range []bool{false, true} {
			m, err := reference.NewWithOptions(cfg, splitWeights{mapWeights{t: t2, s: s2, split: split}}, reference.Options{Lazy: lazy})
			if err != nil {
				t.Fatal(err)
			}
			var x []float32
			m.Observe(func(name string, in []float32) {
				if name == "lm_head.weight" {
					x = slices.Clone(in)
				}
			})
			got, err := m.Forward(synthIDs)
			if err != nil {
				t.Fatal(err)
			}
			w := tensors["model.embed_tokens.weight"]
			if split {
				w = head
			}
			last := got[len(got)-1]
			for v := range d.vocab {
				var y float64
				for i := range x {
					y += float64(w[v*d.hidden+i]) * float64(x[i])
				}
				if math.Abs(y-float64(last[v])) > 1e-5 {
					t.Fatalf("split=%v lazy=%v: logit %d = %g, want %g", split, lazy, v, last[v], y)
				}
			}
		}
	}
}

// TestFamilyErrors: refusals name the key, unknown families wrap
// hf.ErrUnsupported, missing tensors are named.
func TestFamilyErrors(t *testing.T) {
	d := tinyDims
	gem := tensorSet{prefix: "model.", gemma: true, qkNorm: true, tied: true}
	q3 := tensorSet{prefix: "model.", headName: "lm_head.weight", qkNorm: true}
	plain := tensorSet{prefix: "model.", headName: "lm_head.weight"}
	for _, tc := range []struct {
		name        string
		cfg         map[string]any
		ts          tensorSet
		drop        string
		want        string
		unsupported bool
	}{
		{"unknown model_type", baseConfig("phi3", "Phi3ForCausalLM", d), plain, "", `"phi3"`, true},
		{"architecture", baseConfig("llama", "LlamaForSequenceClassification", d), plain, "", "LlamaForSequenceClassification", true},
		{"qwen2 sliding", with(baseConfig("qwen2", "Qwen2ForCausalLM", d), "use_sliding_window", true), tensorSet{prefix: "model.", headName: "lm_head.weight", qkvBias: true}, "", "use_sliding_window", true},
		{"qwen3 sliding", with(baseConfig("qwen3", "Qwen3ForCausalLM", d), "use_sliding_window", true), q3, "", "use_sliding_window", true},
		{"qwen3 missing q_norm", baseConfig("qwen3", "Qwen3ForCausalLM", d), q3, "model.layers.1.self_attn.q_norm.weight", "model.layers.1.self_attn.q_norm.weight", false},
		{"qwen2 missing bias", baseConfig("qwen2", "Qwen2ForCausalLM", d), plain, "", "model.layers.0.self_attn.q_proj.bias", false},
		{"gemma missing post_feedforward", gemmaConfig(d), gem, "model.layers.2.post_feedforward_layernorm.weight", "post_feedforward_layernorm", false},
		{"gemma no window", with(gemmaConfig(d), "sliding_window", nil), gem, "", "sliding_window", false},
		{"gemma activation", with(gemmaConfig(d), "hidden_activation", "relu"), gem, "", "hidden_activation", true},
		{"llama activation", with(baseConfig("llama", "LlamaForCausalLM", d), "hidden_act", "gelu"), plain, "", "hidden_act", true},
		{"gemma3 without text_config", with(baseConfig("gemma3", "Gemma3ForConditionalGeneration", d)), gem, "", "text_config", true},
		{"head_dim mismatch", with(baseConfig("qwen3", "Qwen3ForCausalLM", d), "head_dim", 16), q3, "", "self_attn.q_proj.weight", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shapes := tc.ts.shapes(d)
			tensors := randomTensors(shapes, tc.ts.gemma, 1)
			if tc.drop != "" {
				delete(tensors, tc.drop)
			}
			dir := writeCheckpoint(t, tc.cfg, tensors, shapes)
			cfg, err := hf.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := hf.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			for _, lazy := range []bool{false, true} {
				_, err = reference.NewWithOptions(cfg, reference.CheckpointWeights(ck), reference.Options{Lazy: lazy})
				if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("lazy=%v: error %v, want one line naming %s", lazy, err, tc.want)
				}
				if tc.unsupported != errors.Is(err, hf.ErrUnsupported) {
					t.Errorf("lazy=%v: %v: wraps ErrUnsupported = %v, want %v", lazy, err, !tc.unsupported, tc.unsupported)
				}
			}
		})
	}
}

// failingWeights fails to read the tensors named in fail.
type failingWeights struct {
	mapWeights
	fail map[string]bool
}

func (w failingWeights) Tensor(name string) ([]float32, []int64, error) {
	if w.fail[name] {
		return nil, nil, errors.New("disk error reading " + name)
	}
	return w.mapWeights.Tensor(name)
}

// TestLazyReadError: a read that fails mid-step (lazy mode) returns the
// error and leaves the session where it was, so stepping on after the
// error gives the same logits as an undisturbed run.
func TestLazyReadError(t *testing.T) {
	d := tinyDims
	ts := tensorSet{prefix: "model.", headName: "lm_head.weight"}
	shapes := ts.shapes(d)
	tensors := randomTensors(shapes, false, 77)
	cfg, err := hf.ParseConfig(mustJSON(t, with(baseConfig("mistral", "MistralForCausalLM", d), "sliding_window", 4)))
	if err != nil {
		t.Fatal(err)
	}
	w := failingWeights{mapWeights{t: tensors, s: shapes}, map[string]bool{}}
	m, err := reference.NewWithOptions(cfg, w, reference.Options{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	full, err := m.Forward(synthIDs)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSession()
	for p, id := range synthIDs {
		if p == 6 {
			for _, bad := range []string{"model.layers.2.mlp.up_proj.weight", "lm_head.weight"} {
				w.fail[bad] = true
				if _, err := s.Step(id); err == nil || !strings.Contains(err.Error(), bad) {
					t.Fatalf("failing %s: error %v", bad, err)
				}
				if s.Pos() != p {
					t.Fatalf("after a failed step the session is at %d, want %d", s.Pos(), p)
				}
				delete(w.fail, bad)
			}
		}
		row, err := s.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(row, full[p]) {
			t.Fatalf("position %d differs from Forward after the failed steps", p)
		}
	}
	w.fail["model.layers.0.self_attn.k_proj.weight"] = true
	if _, err := m.Forward(synthIDs); err == nil {
		t.Error("Forward with an unreadable tensor succeeded")
	}
}
