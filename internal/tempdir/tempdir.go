// Package tempdir tracks the temporary files and directories that are being
// written beside their final names, and scratch directories such as the
// benchmarks' checkpoints, so that an interrupted run can remove them before
// it exits instead of leaving hidden partial packages or checkpoints
// (gigabytes for a large model) behind.
//
// Writers call Track when they create a temporary path and Publish to move
// it to its final name. The command's signal handler calls Abandon, which
// waits for any Publish in progress, removes every tracked path, and makes
// later Publish calls block: the process is about to exit.
package tempdir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

var (
	mu      sync.Mutex         // guards live
	live    = map[string]int{} // tracked path → times tracked
	publish sync.RWMutex       // read-held by Publish; Abandon takes it for good
)

// Track records path (a temporary file or directory) as being written and
// returns a function that forgets it; call that once the path has been
// published or removed.
func Track(path string) (forget func()) {
	path = key(path)
	mu.Lock()
	live[path]++
	mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			if live[path]--; live[path] <= 0 {
				delete(live, path)
			}
			mu.Unlock()
		})
	}
}

// Publish runs f, the renames that turn a finished temporary path into its
// final one, so that Abandon never runs in the middle of them. After
// Abandon, Publish blocks forever.
func Publish(f func() error) error {
	publish.RLock()
	defer publish.RUnlock()
	return f()
}

// Abandon waits for the Publish calls in progress, removes every tracked
// path and returns the paths it removed and the first error met. It does
// not return the publish lock: call it only on the way out.
func Abandon() (removed []string, err error) {
	publish.Lock()
	mu.Lock()
	paths := make([]string, 0, len(live))
	for p := range live {
		paths = append(paths, p)
	}
	mu.Unlock()
	for _, p := range paths {
		// A writer may still be adding files under p; RemoveAll
		// starts over while it finds any, but try a few times.
		var rerr error
		for range 3 {
			if rerr = os.RemoveAll(p); rerr == nil {
				break
			}
		}
		if rerr != nil && err == nil {
			err = rerr
		}
		if rerr == nil {
			removed = append(removed, p)
		}
	}
	return removed, err
}

// Pattern is the os.MkdirTemp / os.CreateTemp pattern for a temporary path
// to be published as final: ".NAME.tmp-PID-" in final's directory, NAME
// being final's base name and PID this process's id (see Stale).
func Pattern(final string) string {
	return "." + filepath.Base(final) + ".tmp-" + strconv.Itoa(os.Getpid()) + "-"
}

// FinalName returns the name a temporary entry made with Pattern was to be
// published as, and false for any other name.
func FinalName(entry string) (string, bool) {
	i := strings.LastIndex(entry, ".tmp-")
	if i < 2 || entry[0] != '.' {
		return "", false
	}
	return entry[1:i], true
}

// Stale reports whether path (an entry of an output directory) is a
// temporary path left by a run that is no longer writing it: a Pattern
// name whose process is gone, or is this process but no longer tracks it,
// or a temporary name without a process id (older versions wrote those).
// A live run's temporaries are not stale, so two runs writing into one
// directory leave each other's alone.
func Stale(path string) bool {
	entry := filepath.Base(path)
	if _, ok := FinalName(entry); !ok {
		return false
	}
	rest := entry[strings.LastIndex(entry, ".tmp-")+len(".tmp-"):]
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok {
		return true
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return true
	}
	if pid == os.Getpid() {
		mu.Lock()
		defer mu.Unlock()
		return live[key(path)] == 0
	}
	return !processAlive(pid)
}

// key is the form paths are tracked under: absolute where possible, so
// that one path spelt two ways is one entry.
func key(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return filepath.Clean(path)
}

// asideSuffix marks the previous version of a package that a publish
// moved out of the way before renaming the new one into place.
const asideSuffix = ".old"

// Aside is where a publish moves the previous version of final while it
// renames tmp (a Pattern name) into place; Clean puts it back if the
// process died between the two renames.
func Aside(tmp string) string { return tmp + asideSuffix }

// Clean removes the stale temporaries in dir (see Stale). A previous
// version moved aside by a publish that never finished goes back to its
// name instead, if nothing has taken that name since.
func Clean(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		if !Stale(path) {
			continue
		}
		if final, _ := FinalName(e.Name()); strings.HasSuffix(e.Name(), asideSuffix) {
			target := filepath.Join(dir, final)
			if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
				if err := os.Rename(path, target); err != nil {
					return err
				}
				continue
			}
		}
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	return nil
}
