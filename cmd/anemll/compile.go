package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/runner"
)

func init() {
	register("compile", "compile a converted model's packages to .mlmodelc (needs Xcode's coremlcompiler)", runCompile)
}

func runCompile(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSetUsage("compile", "usage: anemll compile --dir OUT [--output DIR]", stderr)
	dir := fs.String("dir", "", "directory of converted packages (uses meta.yaml when present)")
	output := fs.String("output", "", "directory for the .mlmodelc bundles (default: --dir)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" && len(pos) == 1 {
		*dir = pos[0]
	} else if len(pos) != 0 || *dir == "" {
		return fmt.Errorf("%w: anemll compile --dir OUT [--output DIR]", errUsage)
	}
	if *output == "" {
		*output = *dir
	}
	files, err := runner.FindFiles(*dir)
	if err != nil {
		return err
	}
	pkgs := []string{files.Embeddings, files.LMHead}
	if files.Monolithic != "" {
		pkgs = []string{files.Monolithic}
	}
	for _, c := range files.Chunks {
		pkgs = append(pkgs, c.Paths()...)
	}
	if err := pipeline.Compile(pkgs, *output, nil, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d packages in %s\n", len(pkgs), filepath.Clean(*dir))
	return nil
}
