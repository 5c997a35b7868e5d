package arch

import (
	"reflect"
	"testing"
)

func TestFileName(t *testing.T) {
	tests := []struct {
		prefix         string
		part           Part
		lut, chunk, of int
		want           string
	}{
		{"llama", PartEmbeddings, 0, 0, 0, "llama_embeddings.mlpackage"},
		{"llama", PartEmbeddings, 8, 0, 0, "llama_embeddings_lut8.mlpackage"},
		{"llama", PartLMHead, 6, 0, 0, "llama_lm_head_lut6.mlpackage"},
		{"llama", PartLMHead, 0, 3, 9, "llama_lm_head.mlpackage"},
		{"llama", PartFFN, 4, 0, 2, "llama_FFN_lut4_chunk_01of02.mlpackage"},
		{"llama", PartFFN, 0, 1, 2, "llama_FFN_chunk_02of02.mlpackage"},
		{"llama", PartPrefill, 4, 1, 2, "llama_prefill_lut4_chunk_02of02.mlpackage"},
		{"qwen", PartFFNPF, 0, 11, 12, "qwen_FFN_PF_chunk_12of12.mlpackage"},
		{"m", PartFFNPF, 4, 0, 1, "m_FFN_PF_lut4_chunk_01of01.mlpackage"},
	}
	for _, tc := range tests {
		got, err := FileName(tc.prefix, tc.part, tc.lut, tc.chunk, tc.of)
		if err != nil || got != tc.want {
			t.Errorf("FileName(%q,%s,%d,%d,%d) = %q, %v; want %q", tc.prefix, tc.part, tc.lut, tc.chunk, tc.of, got, err, tc.want)
		}
	}
	bad := []struct {
		prefix         string
		part           Part
		lut, chunk, of int
	}{
		{"", PartFFN, 0, 0, 1},
		{"llama", "mlp", 0, 0, 1},
		{"llama", PartFFN, 0, 2, 2},
		{"llama", PartFFN, 0, -1, 2},
		{"llama", PartPrefill, 0, 0, 0},
		{"llama", PartEmbeddings, -4, 0, 0},
	}
	for _, tc := range bad {
		if got, err := FileName(tc.prefix, tc.part, tc.lut, tc.chunk, tc.of); err == nil {
			t.Errorf("FileName(%q,%s,%d,%d,%d) = %q, want error", tc.prefix, tc.part, tc.lut, tc.chunk, tc.of, got)
		}
	}
}

func TestParsePart(t *testing.T) {
	for in, want := range map[string]Part{
		"1": PartEmbeddings, "2": PartFFN, "2_prefill": PartPrefill, "3": PartLMHead,
		"FFN": PartFFN, "ffn_pf": PartFFNPF, "LM_HEAD": PartLMHead, "prefill": PartPrefill,
		"monolithic": PartMonolithic, "monolithic_prefill": PartMonolithicPrefill,
	} {
		if got, err := ParsePart(in); err != nil || got != want {
			t.Errorf("ParsePart(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "4", "all", "monolithic_full", "monolith"} {
		if _, err := ParsePart(in); err == nil {
			t.Errorf("ParsePart(%q): want error", in)
		}
	}
}

// TestMonolithicFileNames checks ANEMLL 0.3.5's monolithic file names.
func TestMonolithicFileNames(t *testing.T) {
	for _, tc := range []struct {
		p    Part
		lut  int
		want string
	}{
		{PartMonolithic, 0, "llama_monolithic.mlpackage"},
		{PartMonolithicPrefill, 4, "llama_monolithic_prefill_lut4.mlpackage"},
		{PartMonolithicFull, 4, "llama_monolithic_full_lut4.mlpackage"},
		{PartMonolithicFull, 0, "llama_monolithic_full.mlpackage"},
	} {
		got, err := FileName("llama", tc.p, tc.lut, 0, 1)
		if err != nil || got != tc.want {
			t.Errorf("FileName(llama, %s, %d) = %q, %v; want %q", tc.p, tc.lut, got, err, tc.want)
		}
		if tc.p.Chunked() || !tc.p.Monolithic() {
			t.Errorf("%s: Chunked %v Monolithic %v", tc.p, tc.p.Chunked(), tc.p.Monolithic())
		}
	}
}

func TestSplitLayers(t *testing.T) {
	tests := []struct {
		layers, chunks int
		want           []Range
	}{
		{2, 1, []Range{{0, 2}}},
		{2, 2, []Range{{0, 1}, {1, 2}}},
		{5, 2, []Range{{0, 3}, {3, 5}}},
		{7, 3, []Range{{0, 3}, {3, 5}, {5, 7}}},
		{32, 8, []Range{{0, 4}, {4, 8}, {8, 12}, {12, 16}, {16, 20}, {20, 24}, {24, 28}, {28, 32}}},
		{3, 3, []Range{{0, 1}, {1, 2}, {2, 3}}},
	}
	for _, tc := range tests {
		got, err := SplitLayers(tc.layers, tc.chunks)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitLayers(%d,%d) = %v, %v; want %v", tc.layers, tc.chunks, got, err, tc.want)
		}
	}
	// Every layer in exactly one chunk, sizes within one, for many shapes.
	for layers := 1; layers <= 40; layers++ {
		for chunks := 1; chunks <= layers; chunks++ {
			rs, err := SplitLayers(layers, chunks)
			if err != nil {
				t.Fatal(err)
			}
			next, lo, hi := 0, layers, 0
			for _, r := range rs {
				if r.Start != next || r.Len() < 1 {
					t.Fatalf("SplitLayers(%d,%d) = %v: gap or empty chunk", layers, chunks, rs)
				}
				next = r.End
				lo, hi = min(lo, r.Len()), max(hi, r.Len())
			}
			if next != layers || hi-lo > 1 {
				t.Fatalf("SplitLayers(%d,%d) = %v: does not cover evenly", layers, chunks, rs)
			}
		}
	}
	for _, tc := range [][2]int{{0, 1}, {2, 0}, {2, 3}, {-1, -1}} {
		if _, err := SplitLayers(tc[0], tc[1]); err == nil {
			t.Errorf("SplitLayers(%d,%d): want error", tc[0], tc[1])
		}
	}
}
