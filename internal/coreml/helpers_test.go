package coreml

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func removeFile(p string) error { return os.Remove(p) }

func writeBytes(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

func truncateFile(p string, n int64) error { return os.Truncate(p, n) }

func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// readAllWeights reads every weight-file constant of pkg.
func readAllWeights(pkg *Package) (int, error) {
	n := 0
	for _, f := range pkg.Program.Functions {
		for _, op := range f.Body.Ops {
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					if a.Value != nil && a.Value.Source != nil {
						if _, err := a.Value.Bytes(); err != nil {
							return n, err
						}
						n++
					}
				}
			}
			if v := op.ConstValue(); v != nil && v.Source != nil {
				if _, err := v.Bytes(); err != nil {
					return n, err
				}
				n++
			}
		}
	}
	return n, nil
}
