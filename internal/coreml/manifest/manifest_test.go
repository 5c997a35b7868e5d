package manifest_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/coreml/manifest"
)

var update = flag.Bool("update", false, "rewrite testdata/new_seed.golden")

var refs = []struct {
	file, model, weights string
}{
	{"embeddings.Manifest.json", "62af3f5b-58ca-4bd2-b711-0bef64522f53", "f949ffdb-205d-4310-bedd-83f6ded447da"},
	{"lm_head_fp16.Manifest.json", "c3b76183-08c0-42f0-95a1-4d038d4de1bf", "3b3ba956-ffb8-4b89-8653-6c67098f6993"},
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReference reads coremltools' manifests and re-marshals them byte for
// byte.
func TestReference(t *testing.T) {
	for _, ref := range refs {
		t.Run(ref.file, func(t *testing.T) {
			orig := readFile(t, ref.file)
			m, err := manifest.Read(bytes.NewReader(orig))
			if err != nil {
				t.Fatal(err)
			}
			want := &manifest.Manifest{
				FileFormatVersion: "1.0.0",
				Items: map[string]manifest.Item{
					ref.model:   {Author: "com.apple.CoreML", Description: "CoreML Model Specification", Name: "model.mlmodel", Path: "com.apple.CoreML/model.mlmodel"},
					ref.weights: {Author: "com.apple.CoreML", Description: "CoreML Model Weights", Name: "weights", Path: "com.apple.CoreML/weights"},
				},
				RootModelIdentifier: ref.model,
			}
			if !reflect.DeepEqual(m, want) {
				t.Errorf("Read = %+v\nwant %+v", m, want)
			}
			if p, err := m.RootModelPath(); err != nil || p != "com.apple.CoreML/model.mlmodel" {
				t.Errorf("RootModelPath() = %q, %v", p, err)
			}
			if p, err := m.WeightsPath(); err != nil || p != "com.apple.CoreML/weights" {
				t.Errorf("WeightsPath() = %q, %v", p, err)
			}
			got, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, orig) {
				t.Errorf("Marshal differs from coremltools:\n%s\nwant\n%s", got, orig)
			}
		})
	}
}

// TestNewMatchesReference checks that New's output is coremltools' file
// with the identifiers substituted, for both item orders.
func TestNewMatchesReference(t *testing.T) {
	used := map[string]bool{}
	for _, seed := range []string{"seed", "a", "b", "c", "d", "e", "f", "g"} {
		m := manifest.New([]byte(seed))
		got, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		model := manifest.ItemID([]byte(seed), manifest.ModelPath)
		weights := manifest.ItemID([]byte(seed), manifest.WeightsPath)
		if m.RootModelIdentifier != model || len(m.Items) != 2 || m.Items[weights].Path != manifest.WeightsPath {
			t.Fatalf("New(%q) = %+v", seed, m)
		}
		for _, ref := range refs {
			if (model < weights) != (ref.model < ref.weights) {
				continue
			}
			used[ref.file] = true
			want := strings.NewReplacer(ref.model, model, ref.weights, weights).Replace(string(readFile(t, ref.file)))
			if string(got) != want {
				t.Errorf("New(%q).Marshal() =\n%s\nwant\n%s", seed, got, want)
			}
		}
	}
	if len(used) != 2 {
		t.Errorf("seeds covered only %v", used)
	}
}

func TestNewGolden(t *testing.T) {
	got, err := manifest.New([]byte("seed")).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "new_seed.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, "new_seed.golden"); !bytes.Equal(got, want) {
		t.Errorf("New(seed) =\n%s\nwant\n%s", got, want)
	}
	// Independent values from Python:
	// uuid.uuid5(ns, "seed\x00com.apple.CoreML/model.mlmodel") with
	// ns = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/anemll/anemll/internal/coreml/manifest").
	if id := manifest.ItemID([]byte("seed"), manifest.ModelPath); id != "823bea50-db71-5f94-8cd4-b6e6fcb62543" {
		t.Errorf("model id %s", id)
	}
	if id := manifest.ItemID([]byte("seed"), manifest.WeightsPath); id != "191309ff-2ad0-5dae-bc4e-ad177d323a63" {
		t.Errorf("weights id %s", id)
	}
}

func TestNewDeterministic(t *testing.T) {
	a, _ := manifest.New([]byte{1, 2, 3}).Marshal()
	b, _ := manifest.New([]byte{1, 2, 3}).Marshal()
	c, _ := manifest.New([]byte{1, 2, 4}).Marshal()
	e, _ := manifest.New(nil).Marshal()
	if a == nil || !bytes.Equal(a, b) {
		t.Errorf("same seed, different manifests:\n%s\n%s", a, b)
	}
	if bytes.Equal(a, c) || bytes.Equal(a, e) {
		t.Error("different seeds, same manifest")
	}
	// The separator keeps seed and path apart.
	if manifest.ItemID([]byte("x"), "y/z") == manifest.ItemID([]byte("x\x00y"), "z") {
		t.Error("ItemID is ambiguous")
	}
	m, err := manifest.Read(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, manifest.New([]byte{1, 2, 3})) {
		t.Errorf("Read(Marshal(New)) = %+v", m)
	}
}

func TestPaths(t *testing.T) {
	m := manifest.New([]byte("p"))
	m.Items["extra"] = manifest.Item{Author: "com.example", Name: "weights", Path: "com.example/weights"}
	if p, err := m.WeightsPath(); err != nil || p != manifest.WeightsPath {
		t.Errorf("WeightsPath with a foreign weights item = %q, %v", p, err)
	}
	m.Items["dup"] = manifest.Item{Author: manifest.Author, Name: manifest.WeightsName, Path: "com.apple.CoreML/weights2"}
	if _, err := m.WeightsPath(); !errors.Is(err, manifest.ErrInvalid) {
		t.Errorf("two weights items: %v", err)
	}
	m = manifest.New([]byte("p"))
	m.RootModelIdentifier = "nope"
	if _, err := m.RootModelPath(); !errors.Is(err, manifest.ErrInvalid) {
		t.Errorf("RootModelPath with a dangling root: %v", err)
	}
	m = &manifest.Manifest{}
	if _, err := m.WeightsPath(); err == nil {
		t.Error("WeightsPath on an empty manifest succeeded")
	}
}

// doc builds a manifest text from a reference with one substitution.
func doc(t testing.TB, old, new string) string {
	s := string(readFile(t, refs[0].file))
	if !strings.Contains(s, old) {
		t.Fatalf("reference has no %q", old)
	}
	return strings.Replace(s, old, new, 1)
}

func TestReadRefusals(t *testing.T) {
	model := `"` + refs[0].model + `"`
	tests := []struct{ name, text string }{
		{"empty", ""},
		{"not JSON", "hello"},
		{"null", "null"},
		{"array", "[]"},
		{"trailing garbage", doc(t, "\"\n}\n", "\"\n}\nx")},
		{"invalid UTF-8", doc(t, "CoreML Model Weights", "CoreML \xff")},
		{"version missing", doc(t, `"fileFormatVersion": "1.0.0",`, ``)},
		{"version number", doc(t, `"1.0.0"`, `1`)},
		{"version 1.0.1", doc(t, `"1.0.0"`, `"1.0.1"`)},
		{"version 1.1.0", doc(t, `"1.0.0"`, `"1.1.0"`)},
		{"version 2.0.0", doc(t, `"1.0.0"`, `"2.0.0"`)},
		{"version 1.0", doc(t, `"1.0.0"`, `"1.0"`)},
		{"version 1.0.0.0", doc(t, `"1.0.0"`, `"1.0.0.0"`)},
		{"version 1..0", doc(t, `"1.0.0"`, `"1..0"`)},
		{"version v1.0.0", doc(t, `"1.0.0"`, `"v1.0.0"`)},
		{"version -1.0.0", doc(t, `"1.0.0"`, `"-1.0.0"`)},
		{"version +1.0.0", doc(t, `"1.0.0"`, `"+1.0.0"`)},
		{"version 1.0.0 spaced", doc(t, `"1.0.0"`, `" 1.0.0"`)},
		{"version overflow", doc(t, `"1.0.0"`, `"0.0.99999999999999999999999"`)},
		{"items missing", `{"fileFormatVersion": "1.0.0", "rootModelIdentifier": "a"}`},
		{"items array", `{"fileFormatVersion": "1.0.0", "itemInfoEntries": [], "rootModelIdentifier": "a"}`},
		{"items null", `{"fileFormatVersion": "1.0.0", "itemInfoEntries": null, "rootModelIdentifier": "a"}`},
		{"item null", `{"fileFormatVersion": "1.0.0", "itemInfoEntries": {"a": null}, "rootModelIdentifier": "a"}`},
		{"item string", `{"fileFormatVersion": "1.0.0", "itemInfoEntries": {"a": "x"}, "rootModelIdentifier": "a"}`},
		{"no items", `{"fileFormatVersion": "1.0.0", "itemInfoEntries": {}, "rootModelIdentifier": "a"}`},
		{"author missing", doc(t, `"author": "com.apple.CoreML",`, ``)},
		{"description missing", doc(t, `"description": "CoreML Model Weights",`, ``)},
		{"name missing", doc(t, `"name": "weights",`, ``)},
		{"path missing", doc(t, `"name": "weights",
            "path": "com.apple.CoreML/weights"`, `"name": "weights"`)},
		{"author null", doc(t, `"author": "com.apple.CoreML"`, `"author": null`)},
		{"name number", doc(t, `"name": "weights"`, `"name": 7`)},
		{"key case", doc(t, `"author"`, `"Author"`)},
		{"root missing", doc(t, `,
    "rootModelIdentifier": `+model, ``)},
		{"root not an item", doc(t, `"rootModelIdentifier": `+model, `"rootModelIdentifier": "62AF3F5B-58CA-4BD2-B711-0BEF64522F53"`)},
		{"root number", doc(t, `"rootModelIdentifier": `+model, `"rootModelIdentifier": 1`)},
		{"empty identifier", doc(t, `"f949ffdb-205d-4310-bedd-83f6ded447da"`, `""`)},
		{"absolute path", doc(t, `"com.apple.CoreML/weights"`, `"/com.apple.CoreML/weights"`)},
		{"dotdot path", doc(t, `"com.apple.CoreML/weights"`, `"../weights"`)},
		{"inner dotdot path", doc(t, `"com.apple.CoreML/weights"`, `"com.apple.CoreML/../../weights"`)},
		{"only dotdot", doc(t, `"com.apple.CoreML/weights"`, `".."`)},
		{"dot path", doc(t, `"com.apple.CoreML/weights"`, `"."`)},
		{"empty path", doc(t, `"com.apple.CoreML/weights"`, `""`)},
		{"unclean path", doc(t, `"com.apple.CoreML/weights"`, `"com.apple.CoreML//weights"`)},
		{"dot element", doc(t, `"com.apple.CoreML/weights"`, `"./com.apple.CoreML/weights"`)},
		{"trailing slash", doc(t, `"com.apple.CoreML/weights"`, `"com.apple.CoreML/weights/"`)},
		{"backslash path", doc(t, `"com.apple.CoreML/weights"`, `"com.apple.CoreML\\weights"`)},
		{"NUL path", doc(t, `"com.apple.CoreML/weights"`, `"com.apple.CoreML/w\u0000"`)},
		{"too large", doc(t, `"CoreML Model Weights"`, `"`+strings.Repeat("x", 1<<20)+`"`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manifest.Read(strings.NewReader(tc.text))
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			t.Log(err)
			if !errors.Is(err, manifest.ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestReadAccepts(t *testing.T) {
	tests := []struct {
		name, text string
		check      func(*manifest.Manifest) bool
	}{
		{"version 0.9.0", doc(t, `"1.0.0"`, `"0.9.0"`), func(m *manifest.Manifest) bool { return m.FileFormatVersion == "0.9.0" }},
		{"version 01.0.0", doc(t, `"1.0.0"`, `"01.0.0"`), func(m *manifest.Manifest) bool { return m.FileFormatVersion == "01.0.0" }},
		{"extra top-level key", doc(t, `{`, `{"zzz": [1, {"a": 2}],`), func(m *manifest.Manifest) bool { return len(m.Items) == 2 }},
		{"extra item key", doc(t, `"name": "weights",`, `"name": "weights", "size": 12,`), func(m *manifest.Manifest) bool { return len(m.Items) == 2 }},
		{"escapes", doc(t, `"CoreML Model Weights"`, `"a\"b\\c\/d\u00e9\n"`), func(m *manifest.Manifest) bool {
			return m.Items[refs[0].weights].Description == "a\"b\\c/dé\n"
		}},
		{"compact", `{"fileFormatVersion":"1.0.0","itemInfoEntries":{"A":{"author":"","description":"","name":"","path":"x"}},"rootModelIdentifier":"A"}`,
			func(m *manifest.Manifest) bool { p, _ := m.RootModelPath(); return p == "x" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manifest.Read(strings.NewReader(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(m) {
				t.Errorf("Read = %+v", m)
			}
		})
	}
}

func TestMarshalEscaping(t *testing.T) {
	m := &manifest.Manifest{
		FileFormatVersion: "1.0.0",
		Items: map[string]manifest.Item{
			"B": {Author: "q\"b\\s/", Description: "\b\f\n\r\t\x01\x1f\x7f", Name: "é€😀", Path: "a/b"},
			"A": {Author: "", Description: "", Name: "", Path: "ü"},
			"a": {Path: "c"},
		},
		RootModelIdentifier: "B",
	}
	got, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{
    "fileFormatVersion": "1.0.0",
    "itemInfoEntries": {
        "A": {
            "author": "",
            "description": "",
            "name": "",
            "path": "ü"
        },
        "B": {
            "author": "q\"b\\s/",
            "description": "\b\f\n\r\t\u0001\u001f` + "\x7f" + `",
            "name": "é€😀",
            "path": "a/b"
        },
        "a": {
            "author": "",
            "description": "",
            "name": "",
            "path": "c"
        }
    },
    "rootModelIdentifier": "B"
}
`
	if string(got) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", got, want)
	}
	back, err := manifest.Read(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, m) {
		t.Errorf("round trip = %+v, want %+v", back, m)
	}
}

func TestMarshalRefusals(t *testing.T) {
	base := func() *manifest.Manifest { return manifest.New([]byte("x")) }
	root := manifest.ItemID([]byte("x"), manifest.ModelPath)
	tests := []struct {
		name string
		edit func(*manifest.Manifest)
	}{
		{"empty version", func(m *manifest.Manifest) { m.FileFormatVersion = "" }},
		{"newer version", func(m *manifest.Manifest) { m.FileFormatVersion = "1.0.1" }},
		{"nil items", func(m *manifest.Manifest) { m.Items = nil }},
		{"dangling root", func(m *manifest.Manifest) { m.RootModelIdentifier = "x" }},
		{"empty identifier", func(m *manifest.Manifest) { m.Items[""] = manifest.Item{Path: "p"} }},
		{"invalid UTF-8", func(m *manifest.Manifest) {
			it := m.Items[root]
			it.Description = "\xc3"
			m.Items[root] = it
		}},
		{"absolute path", func(m *manifest.Manifest) {
			it := m.Items[root]
			it.Path = "/etc/passwd"
			m.Items[root] = it
		}},
	}
	for _, tc := range tests {
		m := base()
		tc.edit(m)
		if b, err := m.Marshal(); !errors.Is(err, manifest.ErrInvalid) {
			t.Errorf("%s: Marshal = %q, %v; want ErrInvalid", tc.name, b, err)
		}
	}
}

// FuzzRead: whatever Read accepts must marshal, read back equal, and
// marshal again to the same bytes.
func FuzzRead(f *testing.F) {
	for _, ref := range refs {
		f.Add(readFile(f, ref.file))
	}
	f.Add([]byte(`{"fileFormatVersion":"1.0.0","itemInfoEntries":{"A":{"author":"\u0001","description":"\"","name":"é","path":"x/y"}},"rootModelIdentifier":"A"}`))
	f.Add([]byte(`{"fileFormatVersion":"0.0.0","itemInfoEntries":{"A":{"author":"","description":"","name":"","path":"../x"}},"rootModelIdentifier":"A"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Read(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, manifest.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if _, err := m.RootModelPath(); err != nil {
			t.Fatalf("RootModelPath after Read: %v", err)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal after Read: %v", err)
		}
		back, err := manifest.Read(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("Read(Marshal) = %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip changed %+v to %+v", m, back)
		}
		out2, err := back.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal not stable: %v\n%s\n%s", err, out, out2)
		}
	})
}
