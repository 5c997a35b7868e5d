package verify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tokenizer"
)

// tinyModel is the bundled trained model (see its README).
const tinyModel = "../../testdata/tiny-llama-fortunes/bf16"

// convertTiny converts the tiny trained model's four parts into a
// temporary directory and returns the files (separate FFN and prefill
// chunks) and, if combine is set, the combined chunks too.
func convertTiny(t *testing.T, chunks, context int, lut decoder.LUTBits) (sep, comb *runner.Files) {
	t.Helper()
	return convertModel(t, pipeline.Options{Model: tinyModel, ContextLength: context, BatchSize: 64, NumChunks: chunks, LUT: lut})
}

// convertModel converts the four parts of opts.Model (opts.Output is a
// temporary directory) and returns the separate and the combined files.
func convertModel(t *testing.T, opts pipeline.Options) (sep, comb *runner.Files) {
	t.Helper()
	dir := t.TempDir()
	opts.Output = dir
	s, err := pipeline.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(p arch.Part, i int) string {
		path, err := s.WritePart(p, i, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	sep = &runner.Files{Dir: dir, Embeddings: write(arch.PartEmbeddings, 0), LMHead: write(arch.PartLMHead, 0)}
	comb = &runner.Files{Dir: dir, Embeddings: sep.Embeddings, LMHead: sep.LMHead}
	for i := range s.Conv.Layout() {
		c := runner.ChunkFiles{FFN: write(arch.PartFFN, i), Prefill: write(arch.PartPrefill, i)}
		sep.Chunks = append(sep.Chunks, c)
		ffn, err := openPkg(c.FFN)
		if err != nil {
			t.Fatal(err)
		}
		pf, err := openPkg(c.Prefill)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := s.Conv.FileName(arch.PartFFNPF, i)
		if err := combineTo(ffn, pf, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		comb.Chunks = append(comb.Chunks, runner.ChunkFiles{Combined: filepath.Join(dir, name)})
	}
	return sep, comb
}

// fortuneWindows tokenizes the sample fortunes as the model was trained
// (BOS + text + EOS, concatenated) and cuts n windows of size tokens.
func fortuneWindows(t *testing.T, n, size int) [][]int {
	t.Helper()
	tok, err := tokenizer.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../testdata/fortunes-sample.txt")
	if err != nil {
		t.Fatal(err)
	}
	eos := tok.EOS()[0]
	var stream []int
	for _, f := range strings.Split(string(raw), "\n%\n") {
		stream = append(stream, tok.Encode(strings.TrimSpace(f), true)...)
		stream = append(stream, eos)
	}
	if len(stream) < n*size {
		t.Fatalf("sample text has %d tokens, need %d", len(stream), n*size)
	}
	w := make([][]int, n)
	for i := range w {
		w[i] = stream[i*size : (i+1)*size]
	}
	return w
}

func tinyReference(t *testing.T, w func(reference.Weights) reference.Weights) *reference.Model {
	t.Helper()
	cfg, err := hf.LoadConfig(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	var weights reference.Weights = reference.CheckpointWeights(ck)
	if w != nil {
		weights = w(weights)
	}
	ref, err := reference.New(cfg, weights)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// merge folds per-window reports into one, weighting by positions.
func merge(reps []*Report) *Report {
	out := &Report{}
	for _, path := range []struct{ dst, src func(*Report) *PathStats }{
		{func(r *Report) *PathStats { return &r.Decode }, func(r *Report) *PathStats { return &r.Decode }},
		{func(r *Report) *PathStats { return &r.Prefill }, func(r *Report) *PathStats { return &r.Prefill }},
	} {
		d := path.dst(out)
		var top, kl float64
		for _, r := range reps {
			s := path.src(r)
			d.Positions += s.Positions
			top += s.Top1 * float64(s.Positions)
			kl += s.MeanKL * float64(s.Positions)
			d.MaxKL = max(d.MaxKL, s.MaxKL)
			d.MaxAbsLogit = max(d.MaxAbsLogit, s.MaxAbsLogit)
		}
		if d.Positions > 0 {
			d.Top1, d.MeanKL = top/float64(d.Positions), kl/float64(d.Positions)
		}
	}
	return out
}

// TestTinyModelFP16Accuracy converts the trained tiny model in fp16 with
// one and two chunks and checks both paths against the reference over 768
// positions of fortune text: mean KL ≤ 1e-4 and top-1 ≥ 98.5 %.
func TestTinyModelFP16Accuracy(t *testing.T) {
	windows := fortuneWindows(t, 3, 256)
	ref := tinyReference(t, nil)
	for _, chunks := range []int{1, 2} {
		sep, comb := convertTiny(t, chunks, 256, decoder.LUTBits{})
		// One chunk as separate packages, two chunks combined: both
		// package layouts and both chunkings are covered.
		files := sep
		if chunks == 2 {
			files = comb
		}
		rep := compareWindows(t, files, ref, windows, Compare)
		var sb strings.Builder
		rep.Write(&sb)
		t.Logf("chunks=%d combined=%v\n%s", chunks, files.Chunks[0].Combined != "", sb.String())
		if err := rep.Check(Thresholds{MaxMeanKL: 1e-4, MinTop1: 0.985}); err != nil {
			t.Error(err)
		}
		if rep.Decode.Positions < 600 {
			t.Errorf("only %d positions", rep.Decode.Positions)
		}
	}
}

// compareWindows loads files and runs compare on every window, merging
// the reports.
func compareWindows(t *testing.T, files *runner.Files, ref *reference.Model, windows [][]int,
	compare func(*runner.Model, *reference.Model, []int) (*Report, error)) *Report {
	t.Helper()
	m, err := runner.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	var reps []*Report
	for _, w := range windows {
		rep, err := compare(m, ref, w)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
	}
	return merge(reps)
}

// TestGreedyMatchesReference decodes greedily with the converted packages
// and with the reference; they must agree token for token up to the first
// step where the reference's two best logits are within 0.1 (a near-tie
// fp16 may break either way), and for at least 10 tokens.
func TestGreedyMatchesReference(t *testing.T) {
	tok, err := tokenizer.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	ref := tinyReference(t, nil)
	_, comb := convertTiny(t, 2, 256, decoder.LUTBits{})
	m, err := runner.Load(comb)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 1019 // real tokens; rows above are padding
	for _, prompt := range greedyPrompts {
		ids := tok.Encode(prompt, true)
		var got []int
		if _, err := m.Generate(ids, 40, runner.NewSampler(runner.Sampling{Limit: limit}), nil, func(id int) bool {
			got = append(got, id)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		sess := ref.NewSession()
		logits, err := sess.Prefill(ids)
		if err != nil {
			t.Fatal(err)
		}
		agreed := 0
		for step := 0; step < len(got); step++ {
			l := logits[:limit]
			best := runner.Argmax(l)
			second := -1
			for i, v := range l {
				if i != best && (second < 0 || v > l[second]) {
					second = i
				}
			}
			if l[best]-l[second] < 0.1 {
				break
			}
			if got[step] != best {
				t.Errorf("%q: step %d: packages chose %d, reference %d (margin %.3f)", prompt, step, got[step], best, l[best]-l[second])
				break
			}
			agreed++
			if logits, err = sess.Step(best); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%q: %d tokens agree: %q", prompt, agreed, tok.Decode(got[:agreed], false))
		if agreed < 10 {
			t.Errorf("%q: only %d tokens agree before a near-tie or mismatch", prompt, agreed)
		}
	}
}

// greedyPrompts are prompts whose reference continuation has no near-tie
// in its first 10 steps (many short prompts of this 1M-parameter model
// reach one within a few tokens, which ends the comparison early).
var greedyPrompts = []string{"Q: What do you get when", "A computer", "It is", "Q: Why did the chicken", "Q: What"}
