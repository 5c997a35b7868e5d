package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
)

// TestPlannedOutputsAreExact checks that the sizes the disk-space check
// uses are those of the packages the run then writes, byte for byte.
func TestPlannedOutputsAreExact(t *testing.T) {
	out := t.TempDir()
	opts := baseOptions(out)
	opts.Restart = 1
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	planned, err := s.plannedOutputs(opts, []int{0, 1})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(planned) != 2+3*2 {
		t.Fatalf("%d planned packages, want 8: %v", len(planned), planned)
	}
	if _, err := Run(opts); err != nil {
		t.Fatal(err)
	}
	for _, f := range planned {
		if got := DirSize(filepath.Join(out, f.Name)); got != f.Bytes {
			t.Errorf("%s: planned %d bytes, written %d", f.Name, f.Bytes, got)
		}
	}
}

// TestDiskFullRefusedBeforeWriting fakes the free space of the output
// disk: short of the packages' size the run stops before writing anything
// with one line naming the directory and the sizes; with room, or when
// the free space is unknown, it runs.
func TestDiskFullRefusedBeforeWriting(t *testing.T) {
	tests := []struct {
		name    string
		free    func(string) (int64, error)
		wantErr bool
	}{
		{"1 MB free", func(string) (int64, error) { return 1 << 20, nil }, true},
		{"unknown", func(string) (int64, error) { return -1, errors.New("statfs: not supported") }, false},
		{"plenty", func(string) (int64, error) { return 1 << 40, nil }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			opts := baseOptions(out)
			var asked string
			opts.freeSpace = func(dir string) (int64, error) { asked = dir; return tc.free(dir) }
			_, err := Run(opts)
			if asked != out {
				t.Errorf("free space asked for %q, want %q", asked, out)
			}
			ents, _ := os.ReadDir(out)
			if !tc.wantErr {
				if err != nil || len(ents) == 0 {
					t.Fatalf("err %v, %d files", err, len(ents))
				}
				return
			}
			if err == nil {
				t.Fatal("ran on a full disk")
			}
			msg := err.Error()
			for _, w := range []string{"not enough disk space", out, "--output", "GiB is free"} {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message %q is not one line", msg)
			}
			if len(ents) != 0 {
				t.Errorf("wrote %d files on a full disk", len(ents))
			}
		})
	}
}

// TestDiskCheckCountsReplacedPackages: a rerun over an existing output
// needs only the growth plus the largest package written beside its old
// copy.
func TestDiskCheckCountsReplacedPackages(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a.mlpackage"), 0o755)
	os.WriteFile(filepath.Join(dir, "a.mlpackage", "w"), make([]byte, 1000), 0o644)
	files := []PlannedFile{{Name: "a.mlpackage", Bytes: 1000}, {Name: "b.mlpackage", Bytes: 500}}
	need := int64(500 + 1000 + 2*diskSlack) // b, plus a beside its old copy
	for _, tc := range []struct {
		free int64
		ok   bool
	}{{need, true}, {need - 1, false}} {
		err := checkDiskSpace(dir, files, func(string) (int64, error) { return tc.free, nil })
		if (err == nil) != tc.ok {
			t.Errorf("free %d: err %v, want ok %v", tc.free, err, tc.ok)
		}
	}
}

// TestVerifyMemoryRefusedBeforeWriting fakes the memory available: when
// step 8 could not load the packages about to be written, the run stops
// before step 1 with one line; with --skip-check, or when the memory is
// unknown, it runs.
func TestVerifyMemoryRefusedBeforeWriting(t *testing.T) {
	tests := []struct {
		name      string
		avail     int64
		skipCheck bool
		wantErr   bool
	}{
		{"64 KiB available", 64 << 10, false, true},
		{"64 KiB available, --skip-check", 64 << 10, true, false},
		{"unknown", 0, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			opts := baseOptions(out)
			opts.SkipCheck = tc.skipCheck
			verified := false
			opts.Verify = func(string) error { verified = true; return nil }
			opts.memAvailable = func() int64 { return tc.avail }
			_, err := Run(opts)
			ents, _ := os.ReadDir(out)
			if !tc.wantErr {
				if err != nil || len(ents) == 0 || verified == tc.skipCheck {
					t.Fatalf("err %v, %d files, verified %v", err, len(ents), verified)
				}
				return
			}
			if err == nil {
				t.Fatal("ran although step 8 cannot")
			}
			msg := err.Error()
			for _, w := range []string{"step 8", "GiB is available", "--chunk", "--skip-check"} {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") || len(ents) != 0 || verified {
				t.Errorf("message %q (one line?), %d files written, verified %v", msg, len(ents), verified)
			}
		})
	}
}

// TestMissingShardRefusedBeforeWriting: a sharded checkpoint whose index
// names a shard that is not there (the middle one of three, which a run
// reading tensors only when it needs them would reach halfway) is refused
// before anything is written, in one line naming the shard.
func TestMissingShardRefusedBeforeWriting(t *testing.T) {
	model := filepath.Join(t.TempDir(), "model")
	if err := synth.Write(model, synth.Options{Hidden: 64, Intermediate: 128, Layers: 3, Heads: 4, KVHeads: 2, Vocab: 96, Seed: 7, Shards: 3}); err != nil {
		t.Fatal(err)
	}
	missing := hf.ShardName(1, 3)
	if err := os.Remove(filepath.Join(model, missing)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	opts := baseOptions(out)
	opts.Model, opts.ContextLength, opts.BatchSize = model, 64, 16
	_, err := Run(opts)
	if err == nil {
		t.Fatal("converted a checkpoint with a missing shard")
	}
	if msg := err.Error(); !strings.Contains(msg, missing) || !strings.Contains(msg, "missing") || strings.Contains(msg, "\n") {
		t.Errorf("message %q: want one line naming %s as missing", msg, missing)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("wrote %d files", len(ents))
	}
}
