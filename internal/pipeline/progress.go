package pipeline

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress draws a one-line bar on a terminal, or prints nothing until the
// end elsewhere (logs stay readable).
type progress struct {
	w     io.Writer
	label string
	tty   bool
	start time.Time
	last  time.Time
	done  int
	total int
}

func newProgress(w io.Writer, label string) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, label: label, tty: tty, start: time.Now()}
}

func (p *progress) update(done, total int) {
	p.done, p.total = done, total
	if !p.tty || time.Since(p.last) < 100*time.Millisecond && done != total {
		return
	}
	p.last = time.Now()
	const width = 30
	filled := 0
	if total > 0 {
		filled = done * width / total
	}
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d tensors %s", p.label, strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total, time.Since(p.start).Round(100*time.Millisecond))
}

func (p *progress) finish() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "%s: %d tensors in %s\n", p.label, p.total, time.Since(p.start).Round(time.Millisecond))
}
