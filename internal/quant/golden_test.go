package quant

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updatePalettes = flag.Bool("update-palettes", false, "rewrite testdata/palettes.txt from this run")

// paletteHash is the SHA-256 of a palette's LUT (little-endian halves)
// followed by its indices, one byte each.
func paletteHash(p *Palette) string {
	h := sha256.New()
	b := make([]byte, 2*len(p.LUT))
	for i, x := range p.LUT {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	h.Write(b)
	h.Write(p.Indices)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestGoldenPalettes pins the palettizer's output: the hash of every
// eligible tensor's palette of the bundled model at 1, 2, 3, 4, 6 and 8
// bits and of the benchmark matrices (N(0,1) 2048×8192 and one layer of the
// 1B shape) at 4 and 6 bits, recorded from the exact solver as it stood
// before the speed work of issue 13 (testdata/palettes.txt). A faster solver
// must reproduce every byte. Re-record only for an intended change
// (go test ./internal/quant -run GoldenPalettes -update-palettes) and say why.
func TestGoldenPalettes(t *testing.T) {
	type item struct {
		set  string
		t    Tensor
		bits int
	}
	var items []item
	for _, tn := range loadTiny(t) {
		if !Eligible(tn.Shape, 0) {
			continue
		}
		for _, bits := range []int{1, 2, 3, 4, 6, 8} {
			items = append(items, item{"tiny", tn, bits})
		}
	}
	if !testing.Short() {
		big := append([]Tensor{{Name: "normal 2048x8192", Shape: []int64{2048, 8192}, Data: normal2048x8192()}}, loadLayer1B(t)...)
		for _, tn := range big {
			for _, bits := range []int{4, 6} {
				items = append(items, item{"bench", tn, bits})
			}
		}
	}
	got := map[string]string{}
	var keys []string
	for _, it := range items {
		p, err := Palettize(it.t.Data, it.t.Shape, Options{Bits: it.bits})
		if err != nil {
			t.Fatalf("%s: %v", it.t.Name, err)
		}
		key := fmt.Sprintf("%s/%s bits=%d", it.set, it.t.Name, it.bits)
		got[key] = paletteHash(p)
		keys = append(keys, key)
	}
	want := goldenFile(t, "testdata/palettes.txt", *updatePalettes, keys, got, 1)
	if want == nil {
		return
	}
	bad := 0
	for _, k := range keys {
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("%s: no recorded hash", k)
		case w != got[k]:
			bad++
			t.Errorf("%s: palette hash %s, recorded %s", k, got[k][:16], w[:16])
		}
	}
	if want, n := len(want), len(keys); !testing.Short() && want != n {
		t.Errorf("%d recorded hashes, %d palettes checked", want, n)
	}
	t.Logf("%d palettes checked, %d differ", len(keys), bad)
}

// goldenFile records or reads a golden file of one line per key: its value
// (valueFields space-separated fields) then the key. With update set it
// writes got in the order of keys and returns nil; otherwise it returns the
// recorded values by key.
func goldenFile(t *testing.T, path string, update bool, keys []string, got map[string]string, valueFields int) map[string]string {
	t.Helper()
	if update {
		var sb strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&sb, "%s %s\n", got[k], k)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", valueFields+1)
		if len(fields) == valueFields+1 {
			want[fields[valueFields]] = strings.Join(fields[:valueFields], " ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return want
}
