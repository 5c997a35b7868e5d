package reference_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
)

var testdata = filepath.Join("..", "..", "testdata")

// openModel loads the checkpoint in dir (eager or lazy).
func openModel(t testing.TB, dir string, opt reference.Options) *reference.Model {
	t.Helper()
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := reference.NewWithOptions(cfg, reference.CheckpointWeights(ck), opt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readIDs reads comma-separated token ids.
func readIDs(t testing.TB, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, f := range strings.Split(strings.TrimSpace(string(b)), ",") {
		id, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// readF32 reads raw little-endian float32 values as rows×cols.
func readF32(t testing.TB, path string, raw []byte, rows, cols int) [][]float32 {
	t.Helper()
	if len(raw) != 4*rows*cols {
		t.Fatalf("%s: %d bytes of data for [%d,%d]", path, len(raw), rows, cols)
	}
	out := make([][]float32, rows)
	for r := range out {
		out[r] = make([]float32, cols)
		for c := range out[r] {
			out[r][c] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(r*cols+c):]))
		}
	}
	return out
}

var npyShape = regexp.MustCompile(`'shape': \((\d+), (\d+)\)`)

// readNPY reads a 2-D little-endian float32 .npy file.
func readNPY(t testing.TB, path string) [][]float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 10 || string(b[1:6]) != "NUMPY" || b[6] != 1 {
		t.Fatalf("%s: not a version-1 .npy file", path)
	}
	hl := int(binary.LittleEndian.Uint16(b[8:10]))
	hdr := string(b[10 : 10+hl])
	if !strings.Contains(hdr, "'descr': '<f4'") || !strings.Contains(hdr, "'fortran_order': False") {
		t.Fatalf("%s: header %q is not C-order <f4", path, hdr)
	}
	sm := npyShape.FindStringSubmatch(hdr)
	if sm == nil {
		t.Fatalf("%s: header %q has no 2-D shape", path, hdr)
	}
	r, _ := strconv.Atoi(sm[1])
	c, _ := strconv.Atoi(sm[2])
	return readF32(t, path, b[10+hl:], r, c)
}

// compareGolden checks logits against want: max |Δlogit| ≤ tol and the
// same argmax at every row (the golden's argmax wins ties within tieGap).
func compareGolden(t *testing.T, name string, got, want [][]float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", name, len(got), len(want))
	}
	var worst float64
	agree := 0
	for p := range want {
		if len(got[p]) != len(want[p]) {
			t.Fatalf("%s row %d: %d logits, want %d", name, p, len(got[p]), len(want[p]))
		}
		for v := range want[p] {
			worst = max(worst, math.Abs(float64(got[p][v])-float64(want[p][v])))
		}
		if reference.Argmax(got[p], 0) == reference.Argmax(want[p], 0) {
			agree++
		} else {
			t.Errorf("%s row %d: argmax %d, golden %d", name, p, reference.Argmax(got[p], 0), reference.Argmax(want[p], 0))
		}
	}
	t.Logf("%s: max |Δlogit| = %.3g over %d×%d, argmax %d/%d", name, worst, len(want), len(want[0]), agree, len(want))
	if worst > tol {
		t.Errorf("%s: max |Δlogit| = %g > %g", name, worst, tol)
	}
}

// Tolerances against the PyTorch fp32 goldens: max |Δlogit| over every
// logit, and argmax agreement at every position (48/48, 40/40). Both
// goldens are float32 computations on the same BF16 weights; the measured
// differences are a few 1e-6 (logged), so 1e-4 leaves rounding room while
// any semantic slip (a norm gain, the window off by one, the RoPE base)
// moves logits by far more than that (see testdata/tiny-gemma3-random's
// README).
const familyGoldenTol = 1e-4

func TestQwenGoldens(t *testing.T) {
	for _, sub := range []string{"qwen3", "qwen25"} {
		t.Run(sub, func(t *testing.T) {
			dir := filepath.Join(testdata, "anemll-qwen", sub)
			ids := readIDs(t, filepath.Join(dir, "reference", "ids48.txt"))
			want := readNPY(t, filepath.Join(dir, "reference", "hf_logits.npy"))
			for _, lazy := range []bool{false, true} {
				m := openModel(t, filepath.Join(dir, "checkpoint"), reference.Options{Lazy: lazy})
				got, err := m.Forward(ids)
				if err != nil {
					t.Fatal(err)
				}
				compareGolden(t, fmt.Sprintf("%s lazy=%v", sub, lazy), got, want, familyGoldenTol)
				stepMatches(t, m, ids, got)
			}
		})
	}
}

func TestGemma3Goldens(t *testing.T) {
	dir := filepath.Join(testdata, "tiny-gemma3-random")
	var idx struct {
		Entries []struct {
			IDsFile   string `json:"ids_file"`
			File      string `json:"file"`
			IDs       []int  `json:"ids"`
			Shape     []int  `json:"shape"`
			ArgmaxIDs []int  `json:"argmax_ids"`
		} `json:"entries"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "golden", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Entries) != 2 {
		t.Fatalf("%d golden sequences, want 2", len(idx.Entries))
	}
	m := openModel(t, dir, reference.Options{})
	if m.Family() != "gemma3_text" {
		t.Fatalf("family %q", m.Family())
	}
	for _, e := range idx.Entries {
		ids := readIDs(t, filepath.Join(dir, "golden", e.IDsFile))
		if fmt.Sprint(ids) != fmt.Sprint(e.IDs) {
			t.Fatalf("%s disagrees with index.json", e.IDsFile)
		}
		path := filepath.Join(dir, "golden", e.File)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := readF32(t, path, raw, e.Shape[0], e.Shape[1])
		got, err := m.Forward(ids)
		if err != nil {
			t.Fatal(err)
		}
		compareGolden(t, e.File, got, want, familyGoldenTol)
		stepMatches(t, m, ids, got)
		for p, am := range e.ArgmaxIDs {
			if g := reference.Argmax(got[p], 0); g != am {
				t.Errorf("%s row %d: argmax %d, index.json %d", e.File, p, g, am)
			}
		}
	}
	// ANEMLL 0.3.5's reference logits of the same checkpoint (48 ids, so
	// positions up to six windows deep).
	ref := filepath.Join(testdata, "anemll-035", "gemma3", "reference")
	ids := readIDs(t, filepath.Join(ref, "ids48.txt"))
	got, err := m.Forward(ids)
	if err != nil {
		t.Fatal(err)
	}
	compareGolden(t, "anemll-035 hf_logits.npy", got, readNPY(t, filepath.Join(ref, "hf_logits.npy")), familyGoldenTol)
}

// stepMatches asserts that a session fed ids one by one reproduces Forward's
// rows bit for bit (they share the layer routine).
func stepMatches(t *testing.T, m *reference.Model, ids []int, full [][]float32) {
	t.Helper()
	s := m.NewSession()
	for p, id := range ids {
		row, err := s.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(row, full[p]) {
			t.Fatalf("Step at position %d differs from Forward", p)
		}
	}
}
