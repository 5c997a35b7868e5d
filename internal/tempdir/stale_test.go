//go:build unix

package tempdir

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// deadPID runs a short child process to its end and returns its id, which
// then names no process (unless the system reuses it at once).
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestStale(t *testing.T) {
	own, dead := strconv.Itoa(os.Getpid()), strconv.Itoa(deadPID(t))
	for _, tc := range []struct {
		entry string
		stale bool
	}{
		{".llama_embeddings.mlpackage.tmp-" + own + "-123", true}, // this process, not tracked
		{".llama_embeddings.mlpackage.tmp-" + dead + "-123", true},
		{".meta.yaml.tmp-" + dead + "-9", true},
		{".llama_embeddings.mlpackage.tmp-2035601355", true}, // no process id: an older version's
		{".meta.yaml.tmp-x-1", true},
		{"llama_embeddings.mlpackage", false},
		{".DS_Store", false},
		{".tmp-" + dead + "-1", false},
	} {
		if got := Stale(tc.entry); got != tc.stale {
			t.Errorf("Stale(%q) = %v, want %v", tc.entry, got, tc.stale)
		}
	}
	dir := t.TempDir()
	final := filepath.Join(dir, "llama_lm_head_lut6.mlpackage")
	tmp, err := os.MkdirTemp(dir, Pattern(final))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(tmp)
	if !strings.HasPrefix(base, ".llama_lm_head_lut6.mlpackage.tmp-"+own+"-") {
		t.Errorf("temporary name %q", base)
	}
	if name, ok := FinalName(base); !ok || name != "llama_lm_head_lut6.mlpackage" {
		t.Errorf("FinalName(%q) = %q, %v", base, name, ok)
	}
	forget := Track(tmp)
	if Stale(tmp) {
		t.Errorf("this process's own temporary %q, tracked, counts as stale", base)
	}
	forget()
	if !Stale(tmp) {
		t.Errorf("this process's own temporary %q, no longer tracked, is not stale", base)
	}
}
