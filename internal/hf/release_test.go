package hf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
)

// TestReleaseKeepsDataReadable decodes each tensor (which lets its mapped
// pages go) and reads it again: the bytes must be unchanged.
func TestReleaseKeepsDataReadable(t *testing.T) {
	c, err := hf.OpenCheckpoint(filepath.Join(tinyDir, "bf16"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range c.Names() {
		raw, err := c.Raw(name)
		if err != nil {
			t.Fatal(err)
		}
		before := append([]byte(nil), raw...)
		if _, _, err := c.Float16(name); err != nil {
			t.Fatal(err)
		}
		after, _ := c.Raw(name)
		if !bytes.Equal(before, after) {
			t.Fatalf("%s changed after its pages were released", name)
		}
		again, _, err := c.Float16(name)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]uint16, len(again))
		if _, err := hf.DecodeFloat16(want, before, hf.BF16); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("%s decodes differently after release", name)
		}
	}
	if _, err := c.Float16Rows("no such tensor", 0, 0, nil); err == nil {
		t.Error("Float16Rows of a missing tensor: no error")
	}
}

// TestFloat16Rows decodes row ranges with a block of two rows, so ranges
// span several blocks, and checks them against the whole tensor.
func TestFloat16Rows(t *testing.T) {
	defer hf.SetFloat16BlockBytes(2 * 3 * 4)()
	const rows, cols = 7, 3
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = float32(i)*0.37 - 3
	}
	vals[5*cols+1] = 1e6 // overflows in row 5
	vals[6*cols+2] = -7e4
	buf := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	dir := t.TempDir()
	err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), []hf.WriteTensor{
		hf.BytesTensor("m", hf.F32, []int64{rows, cols}, buf),
		hf.BytesTensor("s", hf.F32, nil, buf[:4]),
		hf.BytesTensor("i", hf.I32, []int64{1}, []byte{1, 0, 0, 0}),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := open(t, dir)
	all := make([]uint16, len(vals))
	for i, v := range vals {
		all[i] = uint16(fp16.FromFloat32(v))
	}
	tests := []struct {
		row0, row1 int64
		overflow   int
	}{{0, 7, 2}, {2, 5, 0}, {1, 6, 1}, {5, 6, 1}, {6, 7, 1}, {3, 3, 0}, {0, 1, 0}}
	for _, tc := range tests {
		dst := make([]uint16, (tc.row1-tc.row0)*cols)
		over, err := c.Float16Rows("m", tc.row0, tc.row1, dst)
		if err != nil {
			t.Fatalf("rows [%d,%d): %v", tc.row0, tc.row1, err)
		}
		if want := all[tc.row0*cols : tc.row1*cols]; !reflect.DeepEqual(dst, want) || over != tc.overflow {
			t.Errorf("rows [%d,%d) = %04x overflow %d, want %04x overflow %d", tc.row0, tc.row1, dst, over, want, tc.overflow)
		}
	}
	full, over, err := c.Float16("m")
	if err != nil || over != 2 || !reflect.DeepEqual(full, all) {
		t.Errorf("Float16 = %04x, %d, %v; want %04x, 2", full, over, err, all)
	}
	s := make([]uint16, 1)
	if _, err := c.Float16Rows("s", 0, 1, s); err != nil || s[0] != all[0] {
		t.Errorf("scalar = %04x, %v; want %04x", s[0], err, all[0])
	}
	bad := []struct {
		name       string
		row0, row1 int64
		n          int
	}{
		{"m", 0, 8, 24}, {"m", -1, 2, 9}, {"m", 4, 3, 0}, {"m", 0, 2, 5}, {"s", 0, 2, 2}, {"missing", 0, 1, 1},
	}
	for _, b := range bad {
		if _, err := c.Float16Rows(b.name, b.row0, b.row1, make([]uint16, b.n)); err == nil {
			t.Errorf("Float16Rows(%q, %d, %d, %d values): no error", b.name, b.row0, b.row1, b.n)
		}
	}
	if _, err := c.Float16Rows("i", 0, 0, nil); !errors.Is(err, hf.ErrUnsupported) {
		t.Errorf("Float16Rows of I32: %v", err)
	}
}
