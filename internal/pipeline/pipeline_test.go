package pipeline

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/tempdir"
)

const tinyModel = "../../testdata/tiny-llama-fortunes/bf16"

func baseOptions(out string) Options {
	return Options{
		Model: tinyModel, Output: out, Prefix: "llama", ContextLength: 128, BatchSize: 32, NumChunks: 2,
		LUT: decoder.LUTBits{FFN: 4, LMHead: 6}, SkipCheck: true,
	}
}

// digest maps every file under dir (relative path) to its SHA-256.
func digest(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, a, b map[string][32]byte, what string) {
	t.Helper()
	if len(a) != len(b) {
		t.Errorf("%s: %d files vs %d", what, len(a), len(b))
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			t.Errorf("%s: %s differs", what, k)
		}
	}
}

func TestRunProducesANEMLLFileSetDeterministically(t *testing.T) {
	out := t.TempDir()
	var log bytes.Buffer
	opts := baseOptions(out)
	opts.Log = &log
	res, err := Run(opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	want := []string{
		"config.json", "generation_config.json",
		"llama_FFN_PF_lut4_chunk_01of02.mlpackage", "llama_FFN_PF_lut4_chunk_02of02.mlpackage",
		"llama_FFN_lut4_chunk_01of02.mlpackage", "llama_FFN_lut4_chunk_02of02.mlpackage",
		"llama_embeddings.mlpackage", "llama_lm_head_lut6.mlpackage",
		"llama_prefill_lut4_chunk_01of02.mlpackage", "llama_prefill_lut4_chunk_02of02.mlpackage",
		"meta.yaml", "tokenizer.json", "tokenizer_config.json",
	}
	if strings.Join(res.Files, " ") != strings.Join(want, " ") {
		t.Errorf("files:\n got %v\nwant %v", res.Files, want)
	}
	meta, _ := os.ReadFile(filepath.Join(out, "meta.yaml"))
	for _, line := range []string{"    lut_ffn: 4\n", "    lut_embeddings: none\n", "    ffn: llama_FFN_PF_lut4.mlmodelc\n", "    num_chunks: 2\n", "    context_length: 128\n", "    split_lm_head: 8\n", "    lm_head: llama_lm_head_lut6.mlmodelc\n"} {
		if !strings.Contains(string(meta), line) {
			t.Errorf("meta.yaml lacks %q:\n%s", line, meta)
		}
	}
	for _, step := range Steps[1:7] {
		if !strings.Contains(log.String(), step) {
			t.Errorf("log lacks step %q", step)
		}
	}
	// Combined weight files are no larger than 1.02 × the larger input.
	for i := 1; i <= 2; i++ {
		size := func(name string) int64 {
			st, err := os.Stat(filepath.Join(out, fmt.Sprintf(name, i), "Data/com.apple.CoreML/weights/weight.bin"))
			if err != nil {
				t.Fatal(err)
			}
			return st.Size()
		}
		c, f, p := size("llama_FFN_PF_lut4_chunk_%02dof02.mlpackage"), size("llama_FFN_lut4_chunk_%02dof02.mlpackage"), size("llama_prefill_lut4_chunk_%02dof02.mlpackage")
		if float64(c) > 1.02*float64(max(f, p)) {
			t.Errorf("chunk %d: combined weight.bin %d > 1.02 × %d", i, c, max(f, p))
		}
	}
	first := digest(t, out)
	// A second run into a fresh directory gives byte-identical files.
	out2 := t.TempDir()
	if _, err := Run(baseOptions(out2)); err != nil {
		t.Fatal(err)
	}
	sameTree(t, first, digest(t, out2), "second run")
}

// TestRestartAfterFaultAtEachStep interrupts the run inside every step and
// checks that rerunning with --restart at that step gives the same files
// as an uninterrupted run, with no half-written package left looking
// complete.
func TestRestartAfterFaultAtEachStep(t *testing.T) {
	clean := t.TempDir()
	if _, err := Run(baseOptions(clean)); err != nil {
		t.Fatal(err)
	}
	want := digest(t, clean)
	errCrash := errors.New("simulated crash")
	for step := 1; step <= 7; step++ {
		t.Run(fmt.Sprintf("step%d", step), func(t *testing.T) {
			out := t.TempDir()
			opts := baseOptions(out)
			hit := false
			opts.fault = func(s int, where string) error {
				// Crash in the middle of writing a package where the step
				// writes packages, else after its first piece of work.
				if s == step && !hit && (where == "mid-package" || step >= 5) {
					hit = true
					return errCrash
				}
				return nil
			}
			if _, err := Run(opts); !errors.Is(err, errCrash) {
				t.Fatalf("run with fault: %v", err)
			}
			// What a crash leaves: only complete packages (or temporary
			// directories, which the next run removes).
			ents, _ := os.ReadDir(out)
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".mlpackage") {
					if _, err := os.Stat(filepath.Join(out, e.Name(), "Manifest.json")); err != nil {
						t.Errorf("incomplete package %s left behind", e.Name())
					}
				}
			}
			opts = baseOptions(out)
			opts.Restart = step
			if _, err := Run(opts); err != nil {
				t.Fatal(err)
			}
			sameTree(t, want, digest(t, out), "restarted run")
		})
	}
}

func TestOnlyRunsOneStep(t *testing.T) {
	out := t.TempDir()
	opts := baseOptions(out)
	opts.Only = 2
	if _, err := Run(opts); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(out)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "llama_lm_head_lut6.mlpackage" {
		t.Errorf("--only 2 produced %v", names)
	}
}

// TestCompileStepCallsCompilerPerPackage runs step 6 with a stand-in for
// Apple's compiler and checks it is given each package runners load.
func TestCompileStepCallsCompilerPerPackage(t *testing.T) {
	out := t.TempDir()
	opts := baseOptions(out)
	opts.Only = 6
	var got []string
	opts.Compiler = func(pkg, outDir string) error {
		if outDir != out {
			t.Errorf("compiled into %s", outDir)
		}
		got = append(got, filepath.Base(pkg))
		return nil
	}
	if _, err := Run(opts); err != nil {
		t.Fatal(err)
	}
	want := "llama_embeddings.mlpackage llama_lm_head_lut6.mlpackage llama_FFN_PF_lut4_chunk_01of02.mlpackage llama_FFN_PF_lut4_chunk_02of02.mlpackage"
	if strings.Join(got, " ") != want {
		t.Errorf("compiled %v", got)
	}
}

// TestContextBeyondTrainedPositions checks that a context past the
// checkpoint's max_position_embeddings (512 for the tiny model) is warned
// about once, and one within it is not.
func TestContextBeyondTrainedPositions(t *testing.T) {
	for _, tc := range []struct {
		ctx  int
		warn bool
	}{{512, false}, {1024, true}} {
		var log strings.Builder
		opts := baseOptions(t.TempDir())
		opts.ContextLength, opts.Only, opts.Log = tc.ctx, 1, &log
		if _, err := Run(opts); err != nil {
			t.Fatal(err)
		}
		want := "warning: --context 1024 is beyond the checkpoint's max_position_embeddings 512"
		if got := strings.Count(log.String(), want); got != map[bool]int{false: 0, true: 1}[tc.warn] {
			t.Errorf("context %d: warning printed %d times:\n%s", tc.ctx, got, log.String())
		}
		if !tc.warn && strings.Contains(log.String(), "max_position_embeddings") {
			t.Errorf("context %d: unexpected warning:\n%s", tc.ctx, log.String())
		}
	}
}

// TestPrepareOutputRemovesOnlyStaleTemporaries leaves in an output
// directory a temporary package of a finished process, one of an older
// version (no process id), two of this process (one being written, one
// abandoned), two previous versions moved aside by a publish that died, and
// an unrelated hidden file: prepareOutput keeps the one being written and
// the hidden file, puts back the moved-aside package whose name is free and
// removes the rest, so a second run writing into the same directory does
// not break a running one.
func TestPrepareOutputRemovesOnlyStaleTemporaries(t *testing.T) {
	out := t.TempDir()
	child := exec.Command("true")
	if err := child.Run(); err != nil {
		t.Skip("no true(1) to make a finished process:", err)
	}
	dead := strconv.Itoa(child.Process.Pid)
	entries := map[string]bool{ // name → removed
		".llama_FFN_lut4_chunk_01of02.mlpackage.tmp-" + dead + "-77":            true,
		".llama_embeddings.mlpackage.tmp-2035601355":                            true,
		".llama_lm_head_lut6.mlpackage.tmp-" + strconv.Itoa(os.Getpid()) + "-5": false,
		".llama_lm_head_lut6.mlpackage.tmp-" + strconv.Itoa(os.Getpid()) + "-6": true,
		".DS_Store": false,
		// A previous version moved aside by a publish that died before
		// renaming the new one in: put back if its name is free.
		".llama_embeddings.mlpackage.tmp-" + dead + "-8.old":            true,
		".llama_FFN_lut4_chunk_02of02.mlpackage.tmp-" + dead + "-9.old": true,
		"llama_FFN_lut4_chunk_02of02.mlpackage":                         false,
	}
	for name := range entries {
		if err := os.MkdirAll(filepath.Join(out, name, "Data"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// This process is writing -5 (tracked), not -6 (a crashed write).
	defer tempdir.Track(filepath.Join(out, ".llama_lm_head_lut6.mlpackage.tmp-"+strconv.Itoa(os.Getpid())+"-5"))()
	if err := prepareOutput(out); err != nil {
		t.Fatal(err)
	}
	for name, removed := range entries {
		_, err := os.Stat(filepath.Join(out, name))
		if gone := os.IsNotExist(err); gone != removed {
			t.Errorf("%s: removed %v, want %v", name, gone, removed)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "llama_embeddings.mlpackage", "Data")); err != nil {
		t.Errorf("the package moved aside was not put back: %v", err)
	}
}
