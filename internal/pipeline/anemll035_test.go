package pipeline

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
	"gopkg.in/yaml.v3"
)

const ref035 = "../../testdata/anemll-035"

// iface is a package's interface as normalized lines: functions, default
// function and each function's inputs, outputs and states with dtype and
// shape.
type iface map[string][]string

var (
	dumpPkg  = regexp.MustCompile(`^== \S+/(\S+)\.mlpackage`)
	dumpFns  = regexp.MustCompile(`^functions: \[(.*)\]\s+default: (\S+)`)
	dumpFn   = regexp.MustCompile(`^  function (\w+):$`)
	dumpFeat = regexp.MustCompile(`^    (input|output|state)\s+(\w+): (?:multiArray (\w+) shape=\[([^\]]*)\]|state\((\w+) shape=\[([^\]]*)\]\))`)
)

// readDump parses one of ANEMLL's structure dumps.
func readDump(t *testing.T, path string) (string, iface) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var name, fn string
	out := iface{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if m := dumpPkg.FindStringSubmatch(l); m != nil && name == "" {
			name = m[1]
		}
		if m := dumpFns.FindStringSubmatch(l); m != nil {
			fns := strings.ReplaceAll(strings.ReplaceAll(m[1], "'", ""), " ", "")
			def := m[2]
			out["functions"] = []string{fns, def}
		}
		if m := dumpFn.FindStringSubmatch(l); m != nil {
			fn = m[1]
		}
		if m := dumpFeat.FindStringSubmatch(l); m != nil && fn != "" {
			dt, shape := m[3], m[4]
			if m[1] == "state" {
				dt, shape = m[5], m[6]
			}
			out[fn] = append(out[fn], fmt.Sprintf("%s %s %s [%s]", m[1], m[2], dt, strings.ReplaceAll(shape, " ", "")))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return name, out
}

var dtName = map[mil.DType]string{mil.Float16: "FLOAT16", mil.Int32: "INT32", mil.Float32: "FLOAT32"}

// ourIface renders one of our packages like readDump.
func ourIface(t *testing.T, path string) iface {
	t.Helper()
	pkg, err := coreml.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer pkg.Close()
	out := iface{}
	d := pkg.Description
	fns := d.Functions
	if len(fns) == 0 {
		fns = []coreml.FunctionDescription{{Name: "main", Inputs: d.Inputs, Outputs: d.Outputs, States: d.States}}
		out["functions"] = []string{"main", "main"}
	} else {
		var names []string
		for _, f := range fns {
			names = append(names, f.Name)
		}
		out["functions"] = []string{strings.Join(names, ","), d.DefaultFunction}
	}
	shape := func(s []int64) string {
		p := make([]string, len(s))
		for i, x := range s {
			p[i] = fmt.Sprint(x)
		}
		return "[" + strings.Join(p, ",") + "]"
	}
	for _, f := range fns {
		for _, x := range f.Inputs {
			out[f.Name] = append(out[f.Name], fmt.Sprintf("input %s %s %s", x.Name, dtName[x.DType], shape(x.Shape)))
		}
		for _, x := range f.Outputs {
			out[f.Name] = append(out[f.Name], fmt.Sprintf("output %s %s %s", x.Name, dtName[x.DType], shape(x.Shape)))
		}
		for _, x := range f.States {
			out[f.Name] = append(out[f.Name], fmt.Sprintf("state %s %s %s", x.Name, dtName[x.DType], shape(x.Shape)))
		}
	}
	return out
}

// metaKeys returns the dotted keys of a meta.yaml (lists count as leaves).
func metaKeys(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var keys []string
	var walk func(pfx string, v any)
	walk = func(pfx string, v any) {
		mm, ok := v.(map[string]any)
		if !ok {
			keys = append(keys, pfx)
			return
		}
		for k, x := range mm {
			walk(pfx+"."+k, x)
		}
	}
	walk("", m)
	sort.Strings(keys)
	return keys
}

// anemllKeys are the com.anemll.* metadata keys of a reference package.
func anemllKeys(t *testing.T, dump string) []string {
	t.Helper()
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range regexp.MustCompile(`userDefined\[(com\.anemll\.[a-z_]+)\]`).FindAllStringSubmatch(string(b), -1) {
		keys = append(keys, m[1])
	}
	return keys
}

// TestANEMLL035Interfaces converts the bundled model the way the reference
// sets were made (context 256, batch 64, --chunk 2 --argmax; and
// convert_monolith.sh), with state length 512 as ANEMLL forces it, and
// checks that every package's functions, default function, inputs,
// outputs and states (names, dtypes, shapes) equal ANEMLL 0.3.5's
// structure dumps, that our packages carry every com.anemll.* metadata key
// ANEMLL's do, and that meta.yaml has exactly ANEMLL's keys.
func TestANEMLL035Interfaces(t *testing.T) {
	for _, tc := range []struct {
		set   string
		edit  func(*Options)
		pkgs  []string // reference dump name = our package name
		metas []string // reference meta.yaml
	}{
		{"llama-argmax", func(o *Options) { o.Argmax = true; o.LUT = decoder.LUTBits{} },
			[]string{"llama_lm_head", "llama_embeddings", "llama_FFN_PF_chunk_01of02", "llama_FFN_PF_chunk_02of02", "llama_FFN_chunk_02of02", "llama_prefill_chunk_02of02"},
			[]string{"packages/meta.yaml"}},
		{"llama-argmax", func(o *Options) { o.Argmax = true; o.LUT = decoder.LUTBits{FFN: 4, LMHead: 6} },
			[]string{"llama_lm_head_lut6", "llama_FFN_PF_lut4_chunk_01of02", "llama_FFN_lut4_chunk_01of02", "llama_prefill_lut4_chunk_02of02"},
			[]string{"packages-lut/meta.yaml"}},
		{"llama-monolithic", func(o *Options) { o.Monolithic = true; o.NumChunks = 1; o.LUT = decoder.LUTBits{} },
			[]string{"llama_monolithic", "llama_monolithic_prefill", "llama_monolithic_full"},
			[]string{"packages/meta.yaml"}},
		{"llama-monolithic", func(o *Options) {
			o.Monolithic = true
			o.NumChunks = 1
			o.LUT = decoder.LUTBits{Embeddings: 4, FFN: 4, LMHead: 4}
		}, []string{"llama_monolithic_lut4", "llama_monolithic_prefill_lut4", "llama_monolithic_full_lut4"},
			[]string{"packages-lut/meta.yaml"}},
	} {
		t.Run(tc.pkgs[0], func(t *testing.T) {
			out := t.TempDir()
			opts := Options{Model: tinyModel, Output: out, ContextLength: 256, BatchSize: 64, StateLength: 512, NumChunks: 2, SkipCheck: true}
			tc.edit(&opts)
			if _, err := Run(opts); err != nil {
				t.Fatal(err)
			}
			for _, name := range tc.pkgs {
				dump := filepath.Join(ref035, tc.set, "structure", name+".txt")
				_, want := readDump(t, dump)
				if len(want) < 2 || len(want["functions"]) != 2 {
					t.Fatalf("%s: parsed no interface: %v", dump, want)
				}
				for k, v := range want {
					if k != "functions" && len(v) < 2 {
						t.Fatalf("%s: function %s has %d features", dump, k, len(v))
					}
				}
				got := ourIface(t, filepath.Join(out, name+".mlpackage"))
				for k, w := range want {
					if g := got[k]; strings.Join(g, "\n") != strings.Join(w, "\n") {
						t.Errorf("%s %s:\n got %q\nwant %q", name, k, g, w)
					}
				}
				for k := range got {
					if _, ok := want[k]; !ok {
						t.Errorf("%s: we have %s, ANEMLL does not", name, k)
					}
				}
				pkg, err := coreml.Open(filepath.Join(out, name+".mlpackage"))
				if err != nil {
					t.Fatal(err)
				}
				ud := pkg.Description.Metadata.UserDefined
				pkg.Close()
				for _, k := range anemllKeys(t, dump) {
					if _, ok := ud[k]; !ok {
						t.Errorf("%s: metadata lacks %s", name, k)
					}
				}
			}
			for _, m := range tc.metas {
				want := metaKeys(t, filepath.Join(ref035, tc.set, m))
				if len(want) < 15 {
					t.Fatalf("%s: only %d keys", m, len(want))
				}
				got := metaKeys(t, filepath.Join(out, "meta.yaml"))
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("meta.yaml keys:\n got %v\nwant %v", got, want)
				}
			}
		})
	}
}

// TestMonolithicArgmaxDeterministic converts the monolithic LUT model with
// an argmax head twice: every file must be byte-identical, and the
// combined package must store each weight once (its weight file is no
// larger than the infer package's).
func TestMonolithicArgmaxDeterministic(t *testing.T) {
	var sums []map[string][32]byte
	var dirs []string
	for i := 0; i < 2; i++ {
		out := t.TempDir()
		opts := Options{Model: tinyModel, Output: out, ContextLength: 128, BatchSize: 32, Monolithic: true, Argmax: true,
			LUT: decoder.LUTBits{Embeddings: 6, FFN: 4, LMHead: 6}, SkipCheck: true}
		if _, err := Run(opts); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, digest(t, out))
		dirs = append(dirs, out)
	}
	sameTree(t, sums[0], sums[1], "two monolithic runs")
	w := func(name string) int64 {
		st, err := os.Stat(filepath.Join(dirs[0], name, "Data", "com.apple.CoreML", "weights", "weight.bin"))
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	if full, inf := w("llama_monolithic_full_lut4.mlpackage"), w("llama_monolithic_lut4.mlpackage"); full > inf {
		t.Errorf("combined weight file %d bytes > infer's %d: weights not shared", full, inf)
	}
}
