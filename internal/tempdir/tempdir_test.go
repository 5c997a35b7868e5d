package tempdir

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestAbandon tracks a directory being written and a file already
// forgotten, and checks that Abandon removes exactly the first, that it
// waits for a Publish in progress, and that Publish blocks after it. Abandon
// keeps the publish lock for good, so no other test in this package may
// call Publish.
func TestAbandon(t *testing.T) {
	root := t.TempDir()
	partial := filepath.Join(root, ".pkg.tmp-1")
	if err := os.MkdirAll(filepath.Join(partial, "Data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(partial, "Data", "weight.bin"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	forgetPartial := Track(partial)
	defer forgetPartial()
	done := filepath.Join(root, ".meta.tmp-2")
	if err := os.WriteFile(done, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	forget := Track(done)
	final := filepath.Join(root, "meta.yaml")
	if err := Publish(func() error { return os.Rename(done, final) }); err != nil {
		t.Fatal(err)
	}
	forget()
	forget() // a second call is harmless

	inPublish, release := make(chan struct{}), make(chan struct{})
	go Publish(func() error {
		close(inPublish)
		<-release
		return nil
	})
	<-inPublish
	abandoned := make(chan []string)
	go func() {
		removed, err := Abandon()
		if err != nil {
			t.Error(err)
		}
		abandoned <- removed
	}()
	select {
	case <-abandoned:
		t.Fatal("Abandon ran while a Publish was in progress")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	removed := <-abandoned
	if !slices.Equal(removed, []string{partial}) {
		t.Errorf("removed %v, want [%s]", removed, partial)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("partial package still there (stat: %v)", err)
	}
	if _, err := os.Stat(final); err != nil {
		t.Errorf("published file gone: %v", err)
	}
	late := make(chan struct{})
	go func() {
		Publish(func() error { return nil })
		close(late)
	}()
	select {
	case <-late:
		t.Error("Publish ran after Abandon")
	case <-time.After(50 * time.Millisecond):
	}
}
