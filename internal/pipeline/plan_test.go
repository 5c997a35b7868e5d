package pipeline

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
)

// TestPackageSizeExact checks that coreml.PackageSize, computed from the
// packages the converter builds without producing weights, equals the size
// of every package the pipeline writes (fp16 and LUT, separate and
// combined chunks).
func TestPackageSizeExact(t *testing.T) {
	for _, lut := range []decoder.LUTBits{{}, {Embeddings: 6, FFN: 4, LMHead: 6}} {
		out := t.TempDir()
		opts := baseOptions(out)
		opts.LUT = lut
		opts.NumChunks = 3
		if _, err := Run(opts); err != nil {
			t.Fatal(err)
		}
		s, err := Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range arch.Parts {
			chunks := 1
			if p.Chunked() {
				chunks = 3
			}
			for i := 0; i < chunks; i++ {
				name, _ := s.Conv.FileName(p, i)
				pkg, err := s.Conv.Part(p, i)
				if err != nil {
					t.Fatal(err)
				}
				r, err := coreml.PackageSize(pkg)
				if err != nil {
					t.Fatal(err)
				}
				if got := DirSize(filepath.Join(out, name)); got != r.Total() {
					t.Errorf("%s: on disk %d bytes, PackageSize %d (%+v)", name, got, r.Total(), r)
				}
				n++
			}
		}
		s.Close()
		if n != 11 {
			t.Errorf("checked %d packages", n)
		}
	}
}

// TestChunkAutoTiny takes the largest chunked package of a real two-chunk
// conversion as the limit: --chunk auto must pick 2 (one chunk is larger),
// one byte less needs 4 (three chunks still have a two-layer chunk), its
// plan must list exactly the sizes the conversion then writes, and
// every chunked file must be within the limit.
func TestChunkAutoTiny(t *testing.T) {
	two := t.TempDir()
	opts := baseOptions(two)
	if _, err := Run(opts); err != nil {
		t.Fatal(err)
	}
	var limit int64
	ents, _ := os.ReadDir(two)
	for _, e := range ents {
		if strings.Contains(e.Name(), "_chunk_") {
			limit = max(limit, DirSize(filepath.Join(two, e.Name())))
		}
	}
	for _, tc := range []struct {
		limit int64
		want  int
	}{{limit, 2}, {limit - 1, 4}, {1 << 30, 1}} {
		plan, err := PlanChunks(baseOptions(t.TempDir()), tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if plan.Chunks != tc.want {
			t.Errorf("limit %d: %d chunks, want %d", tc.limit, plan.Chunks, tc.want)
			continue
		}
		out := t.TempDir()
		o := baseOptions(out)
		o.NumChunks = plan.Chunks
		if _, err := Run(o); err != nil {
			t.Fatal(err)
		}
		for _, f := range plan.Files {
			got := DirSize(filepath.Join(out, f.Name))
			if got != f.Bytes {
				t.Errorf("limit %d: %s planned %d bytes, written %d", tc.limit, f.Name, f.Bytes, got)
			}
			if strings.Contains(f.Name, "_chunk_") && got > tc.limit {
				t.Errorf("limit %d: %s is %d bytes", tc.limit, f.Name, got)
			}
		}
		if len(plan.Files) != 2+3*plan.Chunks {
			t.Errorf("plan lists %d files", len(plan.Files))
		}
		var sb strings.Builder
		plan.Write(&sb)
		if !strings.Contains(sb.String(), "--chunk auto: ") || strings.Count(sb.String(), "\n") != len(plan.Files)+1 {
			t.Errorf("plan output:\n%s", sb.String())
		}
	}
}

// sparseFile writes zero runs as holes.
type sparseFile struct{ f *os.File }

func (s sparseFile) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != 0 {
			return s.f.Write(p)
		}
	}
	if _, err := s.f.Seek(int64(len(p)), io.SeekCurrent); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sparseCheckpoint writes config.json and an all-zero model.safetensors of
// o's shape as a sparse file (a few KB on disk): enough for planning,
// which reads tensor headers only.
func sparseCheckpoint(t *testing.T, o synth.Options) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := synth.ConfigJSON(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hf.ConfigFile), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 1<<20)
	var ts []hf.WriteTensor
	for _, x := range synth.Tensors(o) {
		x := x
		x.Data = func(w io.Writer) error {
			n, err := x.Size()
			for err == nil && n > 0 {
				k := min(n, int64(len(zero)))
				_, err = w.Write(zero[:k])
				n -= k
			}
			return err
		}
		ts = append(ts, x)
	}
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := hf.EncodeSafetensors(sparseFile{f}, ts, nil)
	if err == nil {
		err = f.Truncate(n)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestChunkAuto1B plans the Llama-3.2-1B shape (16 layers of 60.8 M
// weights, a 128256×2048 tied embedding table) at context 512: the chunk
// counts below are the documented ones (README), every planned chunked
// package is within the limit, one chunk fewer would not be, and a part
// that chunking cannot shrink gets an error naming the fix.
func TestChunkAuto1B(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 2.5 GB sparse checkpoint")
	}
	model := sparseCheckpoint(t, synth.Llama1B())
	base := Options{Model: model, Output: t.TempDir(), ContextLength: 512, BatchSize: 64}
	for _, tc := range []struct {
		ffn, emb, head int
		mb             int64
		want           int
		wantErr        string
	}{
		{ffn: 4, head: 6, mb: 950, want: 1},
		{ffn: 6, head: 6, mb: 950, want: 1},
		{ffn: 4, emb: 6, head: 6, mb: 300, want: 2},
		{ffn: 6, emb: 6, head: 6, mb: 300, want: 3},
		{ffn: 4, head: 6, mb: 300, wantErr: "--lut1"},
		{ffn: 4, emb: 6, mb: 300, wantErr: "--lut3"},
	} {
		o := base
		o.LUT = decoder.LUTBits{Embeddings: tc.emb, FFN: tc.ffn, LMHead: tc.head}
		plan, err := PlanChunks(o, tc.mb*MB)
		if tc.wantErr != "" {
			if err == nil || !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v at %d MB: error %v, want one naming %s", o.LUT, tc.mb, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var sb bytes.Buffer
		plan.Write(&sb)
		t.Logf("LUT %+v, %d MB:\n%s", o.LUT, tc.mb, sb.String())
		if plan.Chunks != tc.want {
			t.Errorf("%+v at %d MB: %d chunks, want %d", o.LUT, tc.mb, plan.Chunks, tc.want)
		}
		for _, f := range plan.Files {
			if strings.Contains(f.Name, "_chunk_") && f.Bytes > tc.mb*MB {
				t.Errorf("%s planned %d bytes over the limit", f.Name, f.Bytes)
			}
		}
		if plan.Chunks > 1 {
			// One chunk fewer must not fit: the count is the smallest.
			if p, err := PlanChunks(o, plan.Largest.Bytes-1); err == nil && p.Chunks < plan.Chunks {
				t.Errorf("smaller limit gave fewer chunks")
			}
			lo := decoderOptions(o)
			lo.NumChunks = plan.Chunks - 1
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			conv, err := decoder.NewConverter(s.Config, s.ckpt, lo)
			if err != nil {
				t.Fatal(err)
			}
			pkg, err := conv.Part(arch.PartFFNPF, 0)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := coreml.PackageSize(pkg)
			if r.Total() <= tc.mb*MB {
				t.Errorf("%d chunks would fit too (%d bytes)", plan.Chunks-1, r.Total())
			}
			s.Close()
		}
	}
}
