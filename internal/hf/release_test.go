package hf_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/anemll/anemll/internal/hf"
)

// TestReleaseKeepsDataReadable drops a tensor's mapped pages and reads it
// again: the bytes must be unchanged.
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
		c.Release(name)
		if _, _, err := c.Float16(name); err != nil {
			t.Fatal(err)
		}
		after, _ := c.Raw(name)
		if !bytes.Equal(before, after) {
			t.Fatalf("%s changed after Release", name)
		}
	}
	c.Release("no such tensor")
}
