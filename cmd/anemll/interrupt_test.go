//go:build unix

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf/synth"
)

// TestMain lets the test binary stand in for the command: with
// ANEMLL_TEST_MAIN=1 it runs main on the arguments after "--".
func TestMain(m *testing.M) {
	if os.Getenv("ANEMLL_TEST_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"anemll"}, os.Args[i+1:]...)
				break
			}
		}
		main()
		return
	}
	os.Exit(m.Run())
}

// TestInterruptRemovesPartialPackages starts a conversion in a child
// process, sends it SIGINT or SIGTERM while a package is being written
// (its hidden temporary directory exists), and checks the exit status, the
// message, that no temporary file or directory is left, and that every
// package left in the output is complete.
func TestInterruptRemovesPartialPackages(t *testing.T) {
	model := t.TempDir()
	if err := synth.Write(model, synth.Options{Hidden: 256, Intermediate: 1024, Layers: 4, Heads: 4, KVHeads: 2, Vocab: 4096, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tinyModel, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(model, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
		word string
	}{
		{syscall.SIGINT, 130, "interrupt"},
		{syscall.SIGTERM, 143, "terminated"},
	} {
		t.Run(tc.word, func(t *testing.T) {
			// A loaded machine may starve the polling loop for a whole
			// (short) conversion: try a few times before giving up.
			var out, caught string
			var err error
			var stderr bytes.Buffer
			for attempt := 0; attempt < 5 && caught == ""; attempt++ {
				out = filepath.Join(t.TempDir(), "out")
				cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "convert", "--model", model, "--output", out, "--skip-check")
				cmd.Env = append(os.Environ(), "ANEMLL_TEST_MAIN=1")
				stderr.Reset()
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
			poll:
				for {
					select {
					case err = <-exited:
						break poll
					default:
					}
					if tmp := tempEntry(out); tmp != "" && caught == "" {
						caught = tmp
						cmd.Process.Signal(tc.sig)
					}
					time.Sleep(200 * time.Microsecond)
				}
			}
			if caught == "" {
				t.Fatalf("the conversion finished before a package was seen half-written, five times (%v)", err)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("exit: %v, want status %d; stderr:\n%s", err, tc.code, stderr.String())
			}
			last := lastLine(stderr.String())
			if !strings.HasPrefix(last, "anemll: "+tc.word+": stopped") {
				t.Errorf("last line %q", last)
			}
			if left := tempEntry(out); left != "" {
				t.Errorf("%s left behind", left)
			}
			// The package seen may have been finished by the time the
			// signal arrived; then nothing was left to remove.
			t.Logf("saw %s; %s", caught, last)
			ents, _ := os.ReadDir(out)
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".mlpackage") {
					if _, err := coreml.Open(filepath.Join(out, e.Name())); err != nil {
						t.Errorf("finished package unreadable: %v", err)
					}
				}
			}
		})
	}
}

// tempEntry returns the name of a temporary entry in dir, "" if none.
func tempEntry(dir string) string {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			return e.Name()
		}
	}
	return ""
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestInterruptHookKeepsRunning sends this test process a real SIGINT
// while an interrupt hook is set: the hook is called and the process goes
// on (without the hook, the handler would end it).
func TestInterruptHookKeepsRunning(t *testing.T) {
	var stderr bytes.Buffer
	stop := handleInterrupts(&stderr, "chat")
	defer stop()
	called := make(chan struct{}, 1)
	hook := func() bool { called <- struct{}{}; return true }
	interruptHook.Store(&hook)
	defer interruptHook.Store(nil)
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-time.After(5 * time.Second):
		t.Fatal("the hook was not called")
	}
	if stderr.Len() != 0 {
		t.Errorf("handler printed %q", stderr.String())
	}
}
