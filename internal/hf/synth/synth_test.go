package synth_test

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
)

func small() synth.Options {
	return synth.Options{Hidden: 64, Intermediate: 160, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 4100, Seed: 7}
}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestDeterministic(t *testing.T) {
	o := small()
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	if err := synth.Write(a, o); err != nil {
		t.Fatal(err)
	}
	// Same files whatever the parallelism (the embedding spans two chunks).
	prev := runtime.GOMAXPROCS(1)
	err := synth.Write(b, o)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}
	fa, fb := readAll(t, a), readAll(t, b)
	if !reflect.DeepEqual(fa, fb) {
		t.Error("same seed gave different files")
	}
	o.Seed = 8
	if err := synth.Write(c, o); err != nil {
		t.Fatal(err)
	}
	fc := readAll(t, c)
	if bytes.Equal(fa["model.safetensors"], fc["model.safetensors"]) {
		t.Error("different seeds gave the same weights")
	}
	if !bytes.Equal(fa["config.json"], fc["config.json"]) {
		t.Error("seed changed config.json")
	}
}

func names(o synth.Options) []string {
	var n []string
	for i := 0; i < o.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		for _, s := range []string{"input_layernorm.weight", "post_attention_layernorm.weight",
			"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
			"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"} {
			n = append(n, p+s)
		}
		if o.AttentionBias {
			for _, s := range []string{"q", "k", "v", "o"} {
				n = append(n, p+"self_attn."+s+"_proj.bias")
			}
		}
	}
	n = append(n, "model.embed_tokens.weight", "model.norm.weight")
	if !o.TieEmbeddings {
		n = append(n, "lm_head.weight")
	}
	sort.Strings(n)
	return n
}

func TestLayoutAndConfig(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*synth.Options)
		headDim int
	}{
		{"default", func(*synth.Options) {}, 16},
		{"tied explicit head_dim bias", func(o *synth.Options) {
			o.TieEmbeddings, o.HeadDim, o.AttentionBias = true, 24, true
		}, 24},
		{"f32 sharded llama3", func(o *synth.Options) {
			o.DType, o.Shards = hf.F32, 3
			o.RopeScaling = &hf.RopeScaling{RopeType: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 64}
		}, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := small()
			tt.mod(&o)
			dir := t.TempDir()
			if err := synth.Write(dir, o); err != nil {
				t.Fatal(err)
			}
			cfg, err := hf.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if cfg.HeadDim != tt.headDim || cfg.HeadDimExplicit != (o.HeadDim > 0) || cfg.NumKeyValueHeads != 2 ||
				cfg.TieWordEmbeddings != o.TieEmbeddings || cfg.AttentionBias != o.AttentionBias ||
				!reflect.DeepEqual(cfg.RopeScaling, o.RopeScaling) {
				t.Errorf("config: %+v", cfg)
			}
			c, err := hf.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got, want := c.Names(), names(o); !reflect.DeepEqual(got, want) {
				t.Fatalf("names\n got %v\nwant %v", got, want)
			}
			hd := int64(tt.headDim)
			shapes := map[string][]int64{
				"model.embed_tokens.weight":              {4100, 64},
				"model.layers.1.self_attn.q_proj.weight": {4 * hd, 64},
				"model.layers.1.self_attn.k_proj.weight": {2 * hd, 64},
				"model.layers.0.self_attn.o_proj.weight": {64, 4 * hd},
				"model.layers.0.mlp.down_proj.weight":    {64, 160},
				"model.layers.0.mlp.up_proj.weight":      {160, 64},
				"model.norm.weight":                      {64},
			}
			for n, s := range shapes {
				info, _ := c.Info(n)
				if !reflect.DeepEqual(info.Shape, s) {
					t.Errorf("%s: shape %v, want %v", n, info.Shape, s)
				}
				wantDT := hf.BF16
				if o.DType != 0 {
					wantDT = o.DType
				}
				if info.DType != wantDT {
					t.Errorf("%s: dtype %v", n, info.DType)
				}
			}
			if o.Shards > 1 {
				if _, err := os.Stat(filepath.Join(dir, hf.ShardName(2, 3))); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func meanStd(v []float32) (float64, float64) {
	var s, s2 float64
	for _, x := range v {
		s += float64(x)
		s2 += float64(x) * float64(x)
	}
	m := s / float64(len(v))
	return m, math.Sqrt(s2/float64(len(v)) - m*m)
}

func TestDistributionsAndDTypes(t *testing.T) {
	o := small()
	dirs := map[hf.DType]string{}
	cks := map[hf.DType]*hf.Checkpoint{}
	for _, dt := range []hf.DType{hf.F32, hf.BF16, hf.F16} {
		o.DType = dt
		dirs[dt] = t.TempDir()
		if err := synth.Write(dirs[dt], o); err != nil {
			t.Fatal(err)
		}
		c, err := hf.OpenCheckpoint(dirs[dt])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cks[dt] = c
	}
	f32 := cks[hf.F32]
	// 4100·64 = 262400 values: the standard error of the std is ~3e-5.
	emb, _ := f32.Float32("model.embed_tokens.weight")
	if m, s := meanStd(emb); math.Abs(m) > 2e-4 || math.Abs(s-0.02) > 2e-4 {
		t.Errorf("embedding mean %g std %g, want 0, 0.02", m, s)
	}
	var gam []float32
	for _, n := range f32.Names() {
		if info, _ := f32.Info(n); len(info.Shape) == 1 {
			v, _ := f32.Float32(n)
			gam = append(gam, v...)
		}
	}
	if m, s := meanStd(gam); math.Abs(m-1) > 0.02 || math.Abs(s-0.1) > 0.015 {
		t.Errorf("norm weights mean %g std %g over %d values, want 1, 0.1", m, s, len(gam))
	}
	// The same stream feeds every dtype: BF16 and F16 files are the F32 values rounded.
	for _, n := range f32.Names() {
		v, _ := f32.Float32(n)
		bf, _ := cks[hf.BF16].Raw(n)
		h, _, _ := cks[hf.F16].Float16(n)
		for i, x := range v {
			if got := uint16(bf[2*i]) | uint16(bf[2*i+1])<<8; got != fp16.Float32ToBF16(x) {
				t.Fatalf("%s[%d]: bf16 %#04x, want %#04x", n, i, got, fp16.Float32ToBF16(x))
			}
			if h[i] != uint16(fp16.FromFloat32(x)) {
				t.Fatalf("%s[%d]: f16 %#04x", n, i, h[i])
			}
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, mod := range map[string]func(*synth.Options){
		"heads not dividing": func(o *synth.Options) { o.Hidden = 66 },
		"kv not dividing":    func(o *synth.Options) { o.KVHeads = 3 },
		"bad dtype":          func(o *synth.Options) { o.DType = hf.I32 },
		"no layers":          func(o *synth.Options) { o.Layers = 0 },
		"unknown rope":       func(o *synth.Options) { o.RopeScaling = &hf.RopeScaling{RopeType: "yarn", Factor: 2} },
		"too many shards":    func(o *synth.Options) { o.Shards = 100 },
	} {
		t.Run(name, func(t *testing.T) {
			o := small()
			mod(&o)
			if err := synth.Write(t.TempDir(), o); err == nil {
				t.Error("Write accepted bad options")
			}
		})
	}
}

// BenchmarkEmbedding1B generates the Llama-3.2-1B embedding (128256×2048
// BF16, 525 MB) to io.Discard.
func BenchmarkEmbedding1B(b *testing.B) {
	ts := synth.Tensors(synth.Llama1B())
	emb := ts[0]
	sz, _ := emb.Size()
	b.SetBytes(sz)
	for b.Loop() {
		if err := emb.Data(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteLlama1B writes a whole Llama-3.2-1B-shaped BF16 checkpoint
// (about 2.5 GB, tied embeddings) to a temporary directory. Run with
// -benchtime=1x.
func BenchmarkWriteLlama1B(b *testing.B) {
	var size int64
	for _, t := range synth.Tensors(synth.Llama1B()) {
		n, _ := t.Size()
		size += n
	}
	b.SetBytes(size)
	for b.Loop() {
		dir := b.TempDir()
		if err := synth.Write(dir, synth.Llama1B()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// TestFamilyShapes checks the published shapes the benchmarks use.
func TestFamilyShapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       synth.Options
		params  int64 // parameter count of the published model
		window  int
		globals int
	}{
		{"Qwen3-0.6B", synth.Qwen3_06B(), 596049920, 0, 0},
		{"Gemma-3-1B", synth.Gemma3_1B(), 999885952, 512, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := synth.ConfigJSON(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			c, err := hf.ParseConfig(b)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			for _, ts := range synth.Tensors(tc.o) {
				e := int64(1)
				for _, d := range ts.Shape {
					e *= d
				}
				n += e
			}
			if n != tc.params {
				t.Errorf("%d parameters, want %d", n, tc.params)
			}
			g := 0
			for _, lt := range c.LayerTypes {
				if lt == "full_attention" {
					g++
				}
			}
			if c.SlidingWindow != tc.window || g != tc.globals {
				t.Errorf("window %d with %d global layers, want %d and %d", c.SlidingWindow, g, tc.window, tc.globals)
			}
		})
	}
}
