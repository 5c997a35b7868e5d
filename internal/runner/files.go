// Package runner drives converted ANEMLL packages the way ANEMLL's own
// runners (chat.py, the Swift CLI) do: embeddings → FFN/prefill chunks
// sharing one KV-cache state → LM head with its logits splits joined, on
// the CPU interpreter.
package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Files names the packages of one converted model.
type Files struct {
	Embeddings string
	LMHead     string
	// Chunks holds, per chunk, either Combined (an FFN_PF package with
	// infer and prefill functions) or FFN and Prefill packages.
	Chunks []ChunkFiles
	// Dir is the directory holding them (and usually the tokenizer).
	Dir string
	// SlidingWindow is meta.yaml's sliding_window (0 when absent): with
	// packages that have *_rotate functions the runner switches to them at
	// this position, as ANEMLL's chat.py does.
	SlidingWindow int
	// Monolithic, when set, is one package with functions infer and
	// prefill holding embeddings, layers and LM head (the other fields are
	// then empty).
	Monolithic string
	// LMHeadChunkSizes are meta.yaml's lm_head_chunk_sizes (the vocabulary
	// rows of each LM-head split), used to place in-model argmax winners.
	LMHeadChunkSizes []int
}

// ChunkFiles are the packages of one chunk of decoder layers.
type ChunkFiles struct {
	// Combined is a multifunction package: infer and prefill, and with
	// ANEMLL 0.3.5's Gemma 3 also infer_rotate and prefill_rotate.
	Combined     string
	FFN, Prefill string
	// FFNRotate and PrefillRotate are ANEMLL 0.3.5's separate rotate
	// packages (…_FFN_rotate_chunk_…, …_prefill_rotate_chunk_…), if any.
	FFNRotate, PrefillRotate string
}

// Paths returns the chunk's package paths that are set.
func (c ChunkFiles) Paths() []string {
	var ps []string
	for _, p := range []string{c.Combined, c.FFN, c.Prefill, c.FFNRotate, c.PrefillRotate} {
		if p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// Meta is the part of meta.yaml the runners read.
type Meta struct {
	ModelInfo struct {
		Name       string `yaml:"name"`
		ModelType  string `yaml:"model_type"`
		Parameters struct {
			ContextLength int    `yaml:"context_length"`
			BatchSize     int    `yaml:"batch_size"`
			NumChunks     int    `yaml:"num_chunks"`
			ModelPrefix   string `yaml:"model_prefix"`
			Embeddings    string `yaml:"embeddings"`
			LMHead        string `yaml:"lm_head"`
			FFN           string `yaml:"ffn"`
			SplitLMHead   int    `yaml:"split_lm_head"`
			TokenizerPath string `yaml:"tokenizer_path"`
			SlidingWindow int    `yaml:"sliding_window"`
			// ANEMLL 0.3.5: in-model argmax and monolithic models.
			ArgmaxInModel    bool   `yaml:"argmax_in_model"`
			VocabSize        int    `yaml:"vocab_size"`
			LMHeadChunkSizes []int  `yaml:"lm_head_chunk_sizes"`
			MonolithicModel  string `yaml:"monolithic_model"`
		} `yaml:"parameters"`
	} `yaml:"model_info"`
}

// ReadMeta parses a meta.yaml file.
func ReadMeta(path string) (*Meta, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("runner: %w: give the meta.yaml that convert wrote in its output directory", err)
	}
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	var m Meta
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("runner: %s: %w", path, err)
	}
	p := m.ModelInfo.Parameters
	if m.ModelInfo.ModelType == "monolithic" {
		if p.MonolithicModel == "" && p.ModelPrefix == "" {
			return nil, fmt.Errorf("runner: %s: a monolithic model needs model_info.parameters.monolithic_model", path)
		}
		return &m, nil
	}
	if p.Embeddings == "" || p.LMHead == "" || p.FFN == "" {
		return nil, fmt.Errorf("runner: %s lacks model_info.parameters.embeddings, lm_head or ffn", path)
	}
	return &m, nil
}

// packagePath maps a runner file name (usually .mlmodelc) to the package
// we can read: the .mlmodelc's .mlpackage twin with the same stem.
func packagePath(dir, name string) (string, error) {
	stem := strings.TrimSuffix(strings.TrimSuffix(name, ".mlmodelc"), ".mlpackage")
	p := filepath.Join(dir, stem+".mlpackage")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("runner: %s not found (meta.yaml names %s; this runner reads .mlpackage files)", p, name)
	}
	return p, nil
}

// chunkSuffixRE matches the _chunk_XXofYY an ffn entry of meta.yaml may
// already carry (ANEMLL 0.3.5 writes the first chunk's name).
var chunkSuffixRE = regexp.MustCompile(`_chunk_\d+of\d+$`)

// FilesFromMeta resolves the packages named by a meta.yaml, as ANEMLL's
// runners do: _chunk_XXofYY is appended to the ffn entry (replacing the
// suffix it may already have; with one chunk the bare name is also tried).
func FilesFromMeta(path string) (*Files, error) {
	m, err := ReadMeta(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	p := m.ModelInfo.Parameters
	if p.SlidingWindow < 0 {
		return nil, fmt.Errorf("runner: %s: sliding_window %d must be positive", path, p.SlidingWindow)
	}
	f := &Files{Dir: dir, SlidingWindow: p.SlidingWindow, LMHeadChunkSizes: p.LMHeadChunkSizes}
	if m.ModelInfo.ModelType == "monolithic" {
		name := p.MonolithicModel
		if name == "" {
			name = p.ModelPrefix + "_monolithic_full"
		}
		if f.Monolithic, err = packagePath(dir, name); err != nil {
			return nil, err
		}
		return f, nil
	}
	if f.Embeddings, err = packagePath(dir, p.Embeddings); err != nil {
		return nil, err
	}
	if f.LMHead, err = packagePath(dir, p.LMHead); err != nil {
		return nil, err
	}
	n := p.NumChunks
	if n < 1 {
		n = 1
	}
	stem := strings.TrimSuffix(strings.TrimSuffix(p.FFN, ".mlmodelc"), ".mlpackage")
	// ANEMLL 0.3.5 names the first chunk (…_chunk_01ofNN); older
	// meta.yaml files name the stem.
	stem = chunkSuffixRE.ReplaceAllString(stem, "")
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s_chunk_%02dof%02d", stem, i, n)
		c, err := packagePath(dir, name)
		if err != nil && n == 1 {
			c, err = packagePath(dir, stem)
		}
		if err != nil {
			return nil, err
		}
		f.Chunks = append(f.Chunks, ChunkFiles{Combined: c})
	}
	return f, nil
}

var chunkRE = regexp.MustCompile(`^(.*)_(FFN_PF|FFN_rotate|FFN|prefill_rotate|prefill)(_lut\d+)?_chunk_(\d+)of(\d+)\.mlpackage$`)

// FindFiles discovers a model's packages in dir without meta.yaml. It
// prefers combined FFN_PF chunks and refuses ambiguous directories (two
// embeddings or LM heads, mixed chunk counts). With separate FFN and
// prefill chunks, complete sets of FFN_rotate and prefill_rotate chunks
// (ANEMLL 0.3.5's Gemma 3) are added to them; one without the other is
// refused.
func FindFiles(dir string) (*Files, error) {
	if _, err := os.Stat(filepath.Join(dir, "meta.yaml")); err == nil {
		return FilesFromMeta(filepath.Join(dir, "meta.yaml"))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	f := &Files{Dir: dir}
	var embeds, heads, monos []string
	type key struct {
		kind string
		n    int
	}
	chunks := map[key]map[int]string{}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".mlpackage") {
			continue
		}
		switch {
		case strings.Contains(name, "_monolithic_full"):
			monos = append(monos, name)
		case strings.Contains(name, "_monolithic"):
		case strings.Contains(name, "_embeddings"):
			embeds = append(embeds, name)
		case strings.Contains(name, "_lm_head"):
			heads = append(heads, name)
		default:
			m := chunkRE.FindStringSubmatch(name)
			if m == nil {
				continue
			}
			i, _ := strconv.Atoi(m[4])
			n, _ := strconv.Atoi(m[5])
			k := key{m[2], n}
			if chunks[k] == nil {
				chunks[k] = map[int]string{}
			}
			if prev, dup := chunks[k][i]; dup {
				return nil, fmt.Errorf("runner: %s: both %s and %s are chunk %d; write a meta.yaml or keep one set", dir, prev, name, i)
			}
			chunks[k][i] = name
		}
	}
	one := func(list []string, what string) (string, error) {
		switch len(list) {
		case 1:
			return filepath.Join(dir, list[0]), nil
		case 0:
			return "", fmt.Errorf("runner: %s has no %s package (*%s*.mlpackage)", dir, what, what)
		}
		sort.Strings(list)
		return "", fmt.Errorf("runner: %s has several %s packages (%s); pass --meta meta.yaml to choose", dir, what, strings.Join(list, ", "))
	}
	if len(monos) > 0 && len(embeds) == 0 {
		f.Monolithic, err = one(monos, "_monolithic_full")
		return f, err
	}
	if f.Embeddings, err = one(embeds, "_embeddings"); err != nil {
		return nil, err
	}
	if f.LMHead, err = one(heads, "_lm_head"); err != nil {
		return nil, err
	}
	complete := func(kind string) (int, bool) {
		found := -1
		for k, m := range chunks {
			if k.kind == kind && len(m) == k.n {
				if found >= 0 {
					return 0, false
				}
				found = k.n
			}
		}
		return found, found > 0
	}
	if n, ok := complete("FFN_PF"); ok {
		for i := 1; i <= n; i++ {
			f.Chunks = append(f.Chunks, ChunkFiles{Combined: filepath.Join(dir, chunks[key{"FFN_PF", n}][i])})
		}
		return f, nil
	}
	nf, okf := complete("FFN")
	np, okp := complete("prefill")
	if !okf || !okp || nf != np {
		return nil, fmt.Errorf("runner: %s has no complete set of FFN_PF chunks, nor matching FFN and prefill chunks", dir)
	}
	present := func(kind string) bool {
		for k := range chunks {
			if k.kind == kind {
				return true
			}
		}
		return false
	}
	rotate := present("FFN_rotate") || present("prefill_rotate")
	if rotate {
		nfr, okfr := complete("FFN_rotate")
		npr, okpr := complete("prefill_rotate")
		if !okfr || !okpr || nfr != nf || npr != nf {
			return nil, fmt.Errorf("runner: %s has %d FFN and prefill chunks but no complete matching set of FFN_rotate and prefill_rotate chunks; add the missing ones or remove the rotate packages", dir, nf)
		}
	}
	for i := 1; i <= nf; i++ {
		c := ChunkFiles{
			FFN:     filepath.Join(dir, chunks[key{"FFN", nf}][i]),
			Prefill: filepath.Join(dir, chunks[key{"prefill", np}][i]),
		}
		if rotate {
			c.FFNRotate = filepath.Join(dir, chunks[key{"FFN_rotate", nf}][i])
			c.PrefillRotate = filepath.Join(dir, chunks[key{"prefill_rotate", nf}][i])
		}
		f.Chunks = append(f.Chunks, c)
	}
	return f, nil
}
