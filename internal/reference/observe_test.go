package reference_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/reference"
)

// observation is one call of an Observe callback, with x copied.
type observation struct {
	name string
	x    []float32
}

func record(m *reference.Model) *[]observation {
	var log []observation
	m.Observe(func(name string, x []float32) {
		log = append(log, observation{name, slices.Clone(x)})
	})
	return &log
}

func TestObserve(t *testing.T) {
	for _, tied := range []bool{false, true} {
		t.Run(fmt.Sprintf("tied=%v", tied), func(t *testing.T) {
			o := synth.Options{Hidden: 32, Intermediate: 48, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 70,
				DType: hf.F32, Std: 0.2, Seed: 5, TieEmbeddings: tied}
			dir := t.TempDir()
			if err := synth.Write(dir, o); err != nil {
				t.Fatal(err)
			}
			cfg, err := hf.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := hf.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			m, err := reference.New(cfg, reference.CheckpointWeights(ck))
			if err != nil {
				t.Fatal(err)
			}
			ids := []int{4, 17, 33, 2, 61}
			var perPos []string // the names one position reports, in order
			for l := range o.Layers {
				for _, n := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
					"self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} {
					perPos = append(perPos, fmt.Sprintf("model.layers.%d.%s.weight", l, n))
				}
			}
			perPos = append(perPos, "lm_head.weight")
			width := map[string]int{}
			for _, n := range perPos {
				width[n] = o.Hidden
				if strings.HasSuffix(n, "down_proj.weight") {
					width[n] = o.Intermediate
				}
			}

			// Session.Step: exactly perPos per token, in that order.
			stepLog := record(m)
			s := m.NewSession()
			var stepLogits [][]float32
			for _, id := range ids {
				row, err := s.Step(id)
				if err != nil {
					t.Fatal(err)
				}
				stepLogits = append(stepLogits, row)
			}
			if len(*stepLog) != len(ids)*len(perPos) {
				t.Fatalf("Step: %d observations, want %d", len(*stepLog), len(ids)*len(perPos))
			}
			for i, ob := range *stepLog {
				if want := perPos[i%len(perPos)]; ob.name != want {
					t.Fatalf("Step observation %d is %q, want %q", i, ob.name, want)
				}
				if len(ob.x) != width[ob.name] {
					t.Fatalf("Step %s: row of %d, want %d", ob.name, len(ob.x), width[ob.name])
				}
			}

			// Forward: the same rows for the same (name, position), in a
			// fixed order of its own.
			fwdLog := record(m)
			full, err := m.Forward(ids)
			if err != nil {
				t.Fatal(err)
			}
			byName := func(log []observation) map[string][][]float32 {
				r := map[string][][]float32{}
				for _, ob := range log {
					r[ob.name] = append(r[ob.name], ob.x)
				}
				return r
			}
			fw, st := byName(*fwdLog), byName(*stepLog)
			if len(fw) != len(perPos) || len(*fwdLog) != len(*stepLog) {
				t.Fatalf("Forward: %d names, %d calls; want %d, %d", len(fw), len(*fwdLog), len(perPos), len(*stepLog))
			}
			for name, rows := range st {
				if len(fw[name]) != len(ids) {
					t.Fatalf("Forward: %s seen %d times, want %d", name, len(fw[name]), len(ids))
				}
				for p := range rows {
					for i := range rows[p] {
						if d := math.Abs(float64(rows[p][i] - fw[name][p][i])); d > 1e-5 {
							t.Fatalf("%s pos %d [%d]: Step %g, Forward %g", name, p, i, rows[p][i], fw[name][p][i])
						}
					}
				}
			}

			// The rows are the real inputs: q_proj of layer 0 sees
			// input_layernorm(embedding), and lm_head.weight·x gives the logits.
			emb, _ := ck.Float32("model.embed_tokens.weight")
			g, _ := ck.Float32("model.layers.0.input_layernorm.weight")
			head := emb
			if !tied {
				head, _ = ck.Float32("lm_head.weight")
			}
			for p, id := range ids {
				e := emb[id*o.Hidden : (id+1)*o.Hidden]
				var ms float64
				for _, v := range e {
					ms += float64(v) * float64(v) / float64(len(e))
				}
				x := st["model.layers.0.self_attn.q_proj.weight"][p]
				for i := range e {
					want := float64(g[i]) * float64(e[i]) / math.Sqrt(ms+cfg.RMSNormEps)
					if math.Abs(float64(x[i])-want) > 1e-5 {
						t.Fatalf("q_proj input pos %d [%d] = %g, want %g", p, i, x[i], want)
					}
				}
				hx := st["lm_head.weight"][p]
				for v := range o.Vocab {
					var y float64
					for i := range hx {
						y += float64(head[v*o.Hidden+i]) * float64(hx[i])
					}
					if math.Abs(y-float64(stepLogits[p][v])) > 1e-5 || math.Abs(y-float64(full[p][v])) > 1e-5 {
						t.Fatalf("lm_head input pos %d: W·x = %g, logits %g / %g", p, y, stepLogits[p][v], full[p][v])
					}
				}
			}

			// Deterministic: the same run reports the same sequence.
			again := record(m)
			if _, err := m.Forward(ids); err != nil {
				t.Fatal(err)
			}
			for i := range *again {
				if (*again)[i].name != (*fwdLog)[i].name || !slices.Equal((*again)[i].x, (*fwdLog)[i].x) {
					t.Fatalf("Forward observation %d differs between runs", i)
				}
			}
			// nil disables.
			m.Observe(nil)
			n := len(*again)
			if _, err := m.Forward(ids); err != nil {
				t.Fatal(err)
			}
			if _, err := m.NewSession().Step(3); err != nil {
				t.Fatal(err)
			}
			if len(*again) != n {
				t.Error("observer still called after Observe(nil)")
			}
		})
	}
}
