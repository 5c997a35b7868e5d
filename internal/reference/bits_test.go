package reference_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"runtime"
	"testing"
)

// forwardBitsAMD64 is the SHA-256 of the tiny trained model's Forward
// logits on 100 tokens and of its first 20 Step logits, as amd64 computes
// them (math.Exp and friends may round differently elsewhere). A change
// to the reference's arithmetic shows here first.
const forwardBitsAMD64 = "b79a1ac04a09e0c8309f0b2cfa255257363f92ccb4ab04f057699e66a12e170b"

func TestForwardBits(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("recorded on amd64")
	}
	m := loadTiny(t, "bf16")
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
