package pipeline

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"

	"github.com/anemll/anemll/internal/arch"
)

// compileAll compiles the packages runners load (embeddings, LM head,
// combined chunks) to .mlmodelc where Apple's compiler exists.
func compileAll(conv Converter, opts Options, log io.Writer) error {
	var pkgs []string
	for _, p := range []arch.Part{arch.PartEmbeddings, arch.PartLMHead} {
		n, err := conv.FileName(p, 0)
		if err != nil {
			return err
		}
		pkgs = append(pkgs, filepath.Join(opts.Output, n))
	}
	for i := range conv.Layout() {
		n, err := conv.FileName(arch.PartFFNPF, i)
		if err != nil {
			return err
		}
		pkgs = append(pkgs, filepath.Join(opts.Output, n))
	}
	return Compile(pkgs, opts.Output, opts.Compiler, log)
}

// Compile compiles each package into outDir with compile, or with Xcode's
// `xcrun coremlcompiler compile` when compile is nil. Where xcrun is
// missing it explains that .mlpackage files work as they are and returns
// nil.
func Compile(pkgs []string, outDir string, compile func(pkg, outDir string) error, log io.Writer) error {
	if compile == nil {
		xcrun, err := exec.LookPath("xcrun")
		if err != nil {
			fmt.Fprintln(log, "  Compiling to .mlmodelc needs Xcode's coremlcompiler (xcrun), which this machine lacks.")
			fmt.Fprintln(log, "  The .mlpackage files work as they are: Core ML compiles them on the device")
			fmt.Fprintln(log, "  (MLModel.compileModel(at:)), and anemll chat/verify run them directly. Continuing.")
			return nil
		}
		compile = func(pkg, outDir string) error {
			cmd := exec.Command(xcrun, "coremlcompiler", "compile", pkg, outDir)
			cmd.Stdout, cmd.Stderr = log, log
			return cmd.Run()
		}
	}
	for _, p := range pkgs {
		fmt.Fprintf(log, "  compiling %s\n", filepath.Base(p))
		if err := compile(p, outDir); err != nil {
			return fmt.Errorf("compile %s: %w", filepath.Base(p), err)
		}
	}
	return nil
}
