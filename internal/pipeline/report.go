package pipeline

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// listOutputs returns the entries of dir, sorted, without hidden ones.
func listOutputs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// DirSize returns the total size of the regular files under path.
func DirSize(path string) int64 {
	var n int64
	filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// writeTable prints the output files with their sizes and a total.
func writeTable(w io.Writer, dir string, files []string) {
	fmt.Fprintf(w, "\nOutput in %s:\n", dir)
	var total int64
	for _, f := range files {
		n := DirSize(filepath.Join(dir, f))
		total += n
		fmt.Fprintf(w, "  %-48s %12s\n", f, humanBytes(n))
	}
	fmt.Fprintf(w, "  %-48s %12s\n", "total", humanBytes(total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
