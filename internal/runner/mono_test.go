package runner

import (
	"errors"
	"testing"

	"github.com/anemll/anemll/internal/runtime"
)

// TestWinner maps argmax_idx/argmax_val to token ids: the split with the
// largest value (the first on ties), its local index plus the split's
// offset from meta.yaml's sizes, else the package's
// com.anemll.lm_head_chunk_sizes, else the vocabulary split as ANEMLL
// splits it (the first vocab%K splits one larger).
func TestWinner(t *testing.T) {
	out := map[string]*runtime.Tensor{
		"argmax_idx": runtime.NewInt32([]int{4}, []int32{5, 7, 2, 9}),
		"argmax_val": runtime.NewFloat16([]int{4}, []float32{1, 3.5, 3.5, -2}),
	}
	for _, tc := range []struct {
		name string
		m    Model
		want int
	}{
		{"meta sizes", Model{argmax: true, chunkSizes: []int{10, 20, 30, 40}}, 10 + 7},
		{"package sizes", Model{argmax: true, headMeta: headMetadata{"com.anemll.lm_head_chunk_sizes": "126,126,126,119"}}, 126 + 7},
		{"vocab split", Model{argmax: true, headMeta: headMetadata{"com.anemll.vocab_size": "1001"}}, 251 + 7},
	} {
		if tc.m.chunkSizes == nil {
			tc.m.chunkSizes = tc.m.headMeta.chunkSizes()
		}
		got, val, err := tc.m.winner(out)
		if err != nil || got != tc.want || val != 3.5 {
			t.Errorf("%s: winner %d (%g), %v; want %d", tc.name, got, val, err, tc.want)
		}
	}
	if _, _, err := (&Model{argmax: true}).winner(out); err == nil {
		t.Errorf("no sizes and no vocabulary: want an error")
	}
	m := &Model{argmax: true}
	if _, err := m.Decode(1, 0); !errors.Is(err, ErrNoLogits) {
		t.Errorf("Decode on an argmax head: %v", err)
	}
	if _, err := m.Logits(nil); !errors.Is(err, ErrNoLogits) {
		t.Errorf("Logits on an argmax head: %v", err)
	}
}
