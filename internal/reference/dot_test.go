package reference

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/anemll/anemll/internal/hf"
)

// dotWide and dotWide2 give dot's result bit for bit, for lengths with
// and without a tail.
func TestDotWideSameAsDot(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 3, 4, 5, 8, 127, 128, 2049} {
		a0, a1, b := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range b {
			a0[i], a1[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64()*1e3), float32(r.NormFloat64()*1e-3)
		}
		w0, w1 := widen(nil, a0), widen(nil, a1)
		d0, d1 := dot(a0, b), dot(a1, b)
		s0, s1 := dotWide2(w0, w1, b)
		if got := dotWide(w0, b); got != d0 || s0 != d0 || s1 != d1 {
			t.Errorf("n=%d: dotWide %v, dotWide2 %v %v, want %v %v", n, got, s0, s1, d0, d1)
		}
	}
}

// forwardBitsAMD64 is the SHA-256 of the tiny trained model's Forward
// logits on 100 tokens and of its first 20 Step logits, as amd64 computes
// them (math.Exp and friends may round differently elsewhere). A change
// to the reference's arithmetic shows here first.
const forwardBitsAMD64 = "b79a1ac04a09e0c8309f0b2cfa255257363f92ccb4ab04f057699e66a12e170b"

func TestForwardBits(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("recorded on amd64")
	}
	dir := "../../testdata/tiny-llama-fortunes/bf16"
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m, err := New(cfg, CheckpointWeights(ck))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, 100)
	for i := range ids {
		ids[i] = (i*37 + 5) % 1000
	}
	h := sha256.New()
	put := func(r []float32) {
		for _, v := range r {
			binary.Write(h, binary.LittleEndian, math.Float32bits(v))
		}
	}
	out, err := m.Forward(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out {
		put(r)
	}
	s := m.NewSession()
	for _, id := range ids[:20] {
		r, err := s.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		put(r)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != forwardBitsAMD64 {
		t.Errorf("reference logits hash %s, recorded %s", got, forwardBitsAMD64)
	}
}
