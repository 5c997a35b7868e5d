package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/anemll/anemll/internal/tempdir"
)

// Exit statuses after an interrupt, as a shell reports a process killed by
// the signal (128 + its number).
const (
	exitInterrupted = 130 // SIGINT
	exitTerminated  = 143 // SIGTERM
)

// interruptHook, when set, is offered each SIGINT first; when it returns
// true the signal has been dealt with (interactive chat stops the answer it
// is writing) and the process carries on. SIGTERM always ends the process.
var interruptHook atomic.Pointer[func() bool]

// handleInterrupts makes SIGINT and SIGTERM remove the temporary files and
// package directories being written (tempdir.Abandon) before the process
// exits, so an interrupted conversion leaves only the packages it had
// finished. command is the subcommand run (convert's message says how to
// resume). The returned function restores the default handling.
func handleInterrupts(stderr io.Writer, command string) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit := make(chan struct{})
	go func() {
		for {
			var sig os.Signal
			select {
			case sig = <-sigs:
			case <-quit:
				return
			}
			if h := interruptHook.Load(); sig == os.Interrupt && h != nil && (*h)() {
				continue // handled: chat stopped the answer it was writing
			}
			removed, err := tempdir.Abandon()
			msg := fmt.Sprintf("anemll: %v: stopped", sig)
			if len(removed) > 0 {
				names := make([]string, len(removed))
				for i, p := range removed {
					names[i] = finalName(p)
				}
				sort.Strings(names)
				msg += "; removed the unfinished " + strings.Join(names, ", ")
				if command == "convert" {
					msg += " (rerun with --restart N to resume)"
				}
			}
			if err != nil {
				msg += fmt.Sprintf("; could not remove all partial files: %v", err)
			}
			fmt.Fprintln(stderr, msg)
			code := exitInterrupted
			if sig == syscall.SIGTERM {
				code = exitTerminated
			}
			os.Exit(code)
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(quit)
	}
}

// finalName is the file name a temporary path was to be published as.
func finalName(tmp string) string {
	if name, ok := tempdir.FinalName(filepath.Base(tmp)); ok {
		return name
	}
	return filepath.Base(tmp)
}
