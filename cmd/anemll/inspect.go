package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
)

func init() {
	register("inspect", "describe a .mlpackage: functions, I/O, states, metadata, ops, weights", runInspect)
}

func runInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", stderr)
	program := fs.Bool("program", false, "print the MIL program text")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: anemll inspect [--program] [--json] PATH.mlpackage")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: give exactly one package path", errUsage)
	}
	pkg, err := coreml.Open(pos[0])
	if err != nil {
		return err
	}
	defer pkg.Close()
	s, err := coreml.Summarize(pkg)
	if err != nil {
		return err
	}
	if *asJSON {
		out := struct {
			*coreml.Summary
			Program string `json:"program,omitempty"`
		}{Summary: s}
		if *program {
			var sb strings.Builder
			if err := mil.Print(&sb, pkg.Program); err != nil {
				return err
			}
			out.Program = sb.String()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if err := s.WriteText(stdout); err != nil {
		return err
	}
	if *program {
		fmt.Fprintln(stdout)
		return mil.Print(stdout, pkg.Program)
	}
	return nil
}
