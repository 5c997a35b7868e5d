package coreml

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/anemll/anemll/internal/coreml/blob"
	"github.com/anemll/anemll/internal/coreml/manifest"
	"github.com/anemll/anemll/internal/coreml/spec"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/tempdir"
)

// maxModelSize bounds the model.mlmodel file we read (weights live apart).
const maxModelSize = 1 << 30

// ManifestName is the manifest file at the root of a package.
const ManifestName = "Manifest.json"

// Open reads the package at dir. Weight-file constants are read lazily
// through their Value.Source; call Close when done to release the file.
func Open(dir string) (*Package, error) {
	m, modelFile, err := readModel(dir)
	if err != nil {
		return nil, err
	}
	weightsDir := filepath.Join(filepath.Dir(modelFile), "weights")
	ws := &weightStore{dir: weightsDir, files: map[string]*blob.File{}}
	pkg, err := FromSpec(m, ws.read)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, modelFile)
	}
	pkg.closer = ws
	return pkg, nil
}

// ReadModelSpec reads the raw Model message of the package at dir (used to
// compare packages message by message).
func ReadModelSpec(dir string) (*spec.Model, error) {
	m, _, err := readModel(dir)
	return m, err
}

// readModel reads Manifest.json and the root model file it names, and
// decodes the model; it also returns the model file's path.
func readModel(dir string) (*spec.Model, string, error) {
	mf, err := os.Open(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, "", fmt.Errorf("coreml: %s is not a model package: %w", dir, err)
	}
	man, err := manifest.Read(mf)
	mf.Close()
	if err != nil {
		return nil, "", fmt.Errorf("coreml: %s: %w", filepath.Join(dir, ManifestName), err)
	}
	rootPath, err := man.RootModelPath()
	if err != nil {
		return nil, "", fmt.Errorf("coreml: %s: %w", dir, err)
	}
	modelFile := filepath.Join(dir, "Data", filepath.FromSlash(rootPath))
	raw, err := readLimited(modelFile, maxModelSize)
	if err != nil {
		return nil, "", fmt.Errorf("coreml: %w", err)
	}
	m, err := spec.Unmarshal(raw)
	if err != nil {
		return nil, "", fmt.Errorf("coreml: %s: %w", modelFile, err)
	}
	return m, modelFile, nil
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// Close releases the weight file of a package read with Open.
func (p *Package) Close() error {
	if p.closer == nil {
		return nil
	}
	err := p.closer.Close()
	p.closer = nil
	return err
}

// weightStore opens weight files on first use and reads blobs from them.
type weightStore struct {
	dir   string
	files map[string]*blob.File
}

// blobDTypes maps MIL element types to weight-file blob types.
var blobDTypes = map[mil.DType]blob.DType{
	mil.Float16: blob.Float16, mil.Float32: blob.Float32, mil.UInt8: blob.UInt8, mil.Int8: blob.Int8,
	mil.BFloat16: blob.BFloat16, mil.Int16: blob.Int16, mil.UInt16: blob.UInt16, mil.Int4: blob.Int4,
	mil.UInt1: blob.UInt1, mil.UInt2: blob.UInt2, mil.UInt4: blob.UInt4, mil.UInt3: blob.UInt3,
	mil.UInt6: blob.UInt6, mil.Int32: blob.Int32, mil.UInt32: blob.UInt32,
	mil.Float8E4M3: blob.Float8E4M3FN, mil.Float8E5M2: blob.Float8E5M2,
}

func (w *weightStore) read(file string, offset uint64, dt mil.DType, n int64) ([]byte, error) {
	name := path.Base(file)
	if !strings.HasPrefix(file, "@model_path/weights/") || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("coreml: weight file %q is not under @model_path/weights/", file)
	}
	f, ok := w.files[name]
	if !ok {
		var err error
		if f, err = blob.Open(filepath.Join(w.dir, name)); err != nil {
			return nil, fmt.Errorf("coreml: %w", err)
		}
		w.files[name] = f
	}
	info, err := f.Blob(offset)
	if err != nil {
		return nil, fmt.Errorf("coreml: %s: %w", name, err)
	}
	if want := blobDTypes[dt]; info.DType != want {
		return nil, fmt.Errorf("coreml: %s blob at %d holds %s, the program expects %s", name, offset, info.DType, dt)
	}
	if want := dt.ByteLen(n); int64(info.Size) != want {
		return nil, fmt.Errorf("coreml: %s blob at %d has %d bytes, %d %s elements need %d", name, offset, info.Size, n, dt, want)
	}
	return f.DataOf(info)
}

func (w *weightStore) Close() error {
	var first error
	for _, f := range w.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	w.files = nil
	return first
}

// Check verifies the program (structure, and every op's declared output
// types against re-inferred ones, as coremltools' loader does) and that the
// description and the program agree as Core ML requires: functions and their descriptions match, every function input
// is a described input or state with the same type, and block outputs equal
// the described outputs in order.
func (p *Package) Check() error {
	if p.Program == nil {
		return errors.New("coreml: package has no program")
	}
	if err := p.Program.Validate(); err != nil {
		return err
	}
	if err := p.Program.CheckTypes(); err != nil {
		return err
	}
	d := &p.Description
	var fds []FunctionDescription
	if len(d.Functions) == 0 {
		if len(p.Program.Functions) != 1 {
			return fmt.Errorf("coreml: %d functions but no function descriptions", len(p.Program.Functions))
		}
		fd, _ := d.Function("")
		fd.Name = p.Program.Functions[0].Name
		fds = []FunctionDescription{fd}
	} else {
		if len(d.Inputs)+len(d.Outputs)+len(d.States) > 0 {
			return errors.New("coreml: a multifunction description must not have top-level features")
		}
		if _, err := d.Function(d.DefaultFunction); err != nil || d.DefaultFunction == "" {
			return fmt.Errorf("coreml: default function %q is not described", d.DefaultFunction)
		}
		fds = d.Functions
		if len(fds) != len(p.Program.Functions) {
			return fmt.Errorf("coreml: %d function descriptions for %d functions", len(fds), len(p.Program.Functions))
		}
	}
	for _, fd := range fds {
		f := p.Program.Function(fd.Name)
		if f == nil {
			return fmt.Errorf("coreml: described function %q is not in the program", fd.Name)
		}
		if err := checkFunction(fd, f); err != nil {
			return fmt.Errorf("coreml: function %q: %w", fd.Name, err)
		}
	}
	return nil
}

func checkFunction(fd FunctionDescription, f *mil.Function) error {
	described := map[string]Feature{}
	for _, in := range fd.Inputs {
		if in.Kind != MultiArray {
			return fmt.Errorf("input %q is not a multi-array", in.Name)
		}
		described[in.Name] = in
	}
	for _, st := range fd.States {
		if st.Kind != StateFeature || st.DType != mil.Float16 {
			return fmt.Errorf("state %q must be an fp16 state", st.Name)
		}
		described[st.Name] = st
	}
	if len(described) != len(f.Inputs) {
		return fmt.Errorf("%d described inputs and states, %d program inputs", len(described), len(f.Inputs))
	}
	for _, in := range f.Inputs {
		feat, ok := described[in.Name]
		if !ok {
			return fmt.Errorf("program input %q is not described", in.Name)
		}
		t := in.Type
		if feat.Kind == StateFeature {
			if t.Kind != mil.KindState {
				return fmt.Errorf("%q is a state in the description but not in the program", in.Name)
			}
			t = *t.Elem
		}
		if t.Kind != mil.KindTensor || t.DType != feat.DType || len(t.Shape) != len(feat.Shape) {
			return fmt.Errorf("input %q: program type %s does not match description %s %v", in.Name, in.Type, feat.DType, feat.Shape)
		}
		for i, dim := range t.Shape {
			if dim >= 0 && dim != feat.Shape[i] {
				return fmt.Errorf("input %q: program type %s does not match description shape %v", in.Name, in.Type, feat.Shape)
			}
		}
		for _, s := range feat.Enumerated {
			if len(s) != len(t.Shape) {
				return fmt.Errorf("input %q: enumerated shape %v has the wrong rank", in.Name, s)
			}
		}
	}
	if len(fd.Outputs) != len(f.Body.Outputs) {
		return fmt.Errorf("%d described outputs, %d block outputs", len(fd.Outputs), len(f.Body.Outputs))
	}
	for i, o := range fd.Outputs {
		if o.Name != f.Body.Outputs[i] {
			return fmt.Errorf("output %d is %q in the description and %q in the program", i, o.Name, f.Body.Outputs[i])
		}
	}
	return nil
}

// WriteOptions tune Write.
type WriteOptions struct {
	// Overwrite replaces an existing package at the target path.
	Overwrite bool
	// Progress, if set, is called before each weight-file constant is
	// produced with the number handed to the writer so far and the total,
	// and with (total, total) once all are written.
	Progress func(done, total int)
}

// Write stores pkg as an .mlpackage directory at dir. The package is built
// in a temporary directory beside dir and renamed into place at the end, so
// dir never holds a half-written package. Weights are streamed: each
// constant's bytes are produced, written and released one at a time.
func Write(pkg *Package, dir string, opts WriteOptions) (err error) {
	if err := pkg.Check(); err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err == nil {
		if !opts.Overwrite {
			return fmt.Errorf("coreml: %s already exists", dir)
		}
		if !st.IsDir() {
			return fmt.Errorf("coreml: %s exists and is not a directory", dir)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), tempdir.Pattern(dir))
	if err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	forget := tempdir.Track(tmp)
	defer forget()
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	if err := writeContents(pkg, tmp, opts.Progress); err != nil {
		return err
	}
	return tempdir.Publish(func() error { return replaceDir(tmp, dir) })
}

func writeContents(pkg *Package, root string, progress func(done, total int)) error {
	modelDir := filepath.Join(root, "Data", filepath.FromSlash(manifest.Author))
	weightsDir := filepath.Join(modelDir, "weights")
	if err := os.MkdirAll(weightsDir, 0o755); err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	wf, err := os.Create(filepath.Join(weightsDir, "weight.bin"))
	if err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	defer wf.Close()
	offsets, err := writeBlobs(pkg.Program, wf, progress)
	if err != nil {
		return err
	}
	if err := wf.Sync(); err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	m, err := ToSpec(pkg, func(v *mil.Value) (string, uint64, error) {
		off, ok := offsets[v]
		if !ok {
			return "", 0, fmt.Errorf("coreml: internal error: %s constant missing from the weight file", v.Type)
		}
		return mil.DefaultBlobFile, off, nil
	})
	if err != nil {
		return err
	}
	raw, err := spec.Marshal(m)
	if err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	if err := writeFile(filepath.Join(modelDir, manifest.ModelName), raw); err != nil {
		return err
	}
	// Item identifiers derive from the model bytes, so equal packages get
	// equal manifests.
	seed := sha256.Sum256(raw)
	mb, err := manifest.New(seed[:]).Marshal()
	if err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	return writeFile(filepath.Join(root, ManifestName), mb)
}

func writeFile(name string, b []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("coreml: write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("coreml: %w", err)
	}
	return f.Close()
}

// replaceDir moves tmp to dir, replacing an existing dir.
func replaceDir(tmp, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		old := tempdir.Aside(tmp)
		defer tempdir.Track(old)()
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("coreml: %w", err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			os.Rename(old, dir)
			return fmt.Errorf("coreml: %w", err)
		}
		return os.RemoveAll(old)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("coreml: %w", err)
	}
	return nil
}

// blobValues returns the constants that go to the weight file, in the
// order the encoder meets them: functions by name, ops in order, attributes
// then inputs, nested blocks last.
func blobValues(p *mil.Program) []*mil.Value {
	var out []*mil.Value
	var visit func(v *mil.Value)
	visit = func(v *mil.Value) {
		if v == nil {
			return
		}
		if v.Type.Kind == mil.KindTensor && v.WantsBlob() {
			out = append(out, v)
		}
		for _, e := range v.Elems {
			visit(e)
		}
		for _, e := range v.Entries {
			visit(e.Key)
			visit(e.Value)
		}
	}
	var block func(b *mil.Block)
	block = func(b *mil.Block) {
		for _, op := range b.Ops {
			for _, a := range op.Attrs {
				visit(a.Value)
			}
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					visit(a.Value)
				}
			}
			for _, nb := range op.Blocks {
				block(nb)
			}
		}
	}
	for _, a := range p.Attrs {
		visit(a.Value)
	}
	for _, f := range sortedFunctions(p) {
		block(f.Body)
	}
	return out
}

// writeBlobs writes every weight-file constant of p once and returns the
// blob offset of each. Identical bytes share one blob. When every constant
// was read from an existing package, the original blob order is kept, so a
// package read and written back keeps its layout.
//
// Constants are produced (lazy sources run: checkpoint decoding,
// palettization, reading other packages) on the calling goroutine, in
// order, and handed to one writer goroutine that de-duplicates and writes
// them in the same order, so producing a constant overlaps writing the one
// before; at most two produced constants are held at a time.
func writeBlobs(p *mil.Program, w io.WriteSeeker, progress func(done, total int)) (map[*mil.Value]uint64, error) {
	vals := blobValues(p)
	fromFile := len(vals) > 0
	for _, v := range vals {
		if v.BlobFile == "" {
			fromFile = false
			break
		}
	}
	if fromFile {
		sort.SliceStable(vals, func(i, j int) bool { return vals[i].BlobOffset < vals[j].BlobOffset })
	}
	bw := blob.NewWriter(w)
	type job struct {
		dt   blob.DType
		data []byte
		n    int64
	}
	jobs := make(chan job)
	var (
		jobOffsets []uint64 // by job number, written by the writer goroutine
		writeErr   error
		failed     atomic.Bool
		wg         sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := range jobs {
			if writeErr != nil {
				continue // drain
			}
			off, err := bw.Add(j.dt, j.data, j.n)
			if err != nil {
				writeErr = fmt.Errorf("coreml: weight file: %w", err)
				failed.Store(true)
				continue
			}
			jobOffsets = append(jobOffsets, off)
		}
	}()
	stop := func() error {
		close(jobs)
		wg.Wait()
		return writeErr
	}
	jobOf := make(map[*mil.Value]int, len(vals))
	type origin struct {
		file string
		off  uint64
	}
	byOrigin := map[origin]int{}
	nJobs := 0
	for i, v := range vals {
		if progress != nil {
			progress(i, len(vals))
		}
		if _, done := jobOf[v]; done {
			continue
		}
		key := origin{v.BlobFile, v.BlobOffset}
		if v.BlobFile != "" {
			if j, ok := byOrigin[key]; ok {
				jobOf[v] = j
				continue
			}
		}
		if failed.Load() {
			break
		}
		data, err := v.Bytes()
		if err == nil {
			err = v.CheckSize(data)
		}
		dt, ok := blobDTypes[v.Type.DType]
		if err == nil && !ok {
			err = fmt.Errorf("coreml: %s constants cannot be stored in the weight file", v.Type.DType)
		}
		if err != nil {
			stop()
			return nil, err
		}
		j := nJobs
		nJobs++
		jobOf[v] = j
		if v.BlobFile != "" {
			byOrigin[key] = j
		}
		jobs <- job{dt, data, v.Type.NumElements()}
	}
	if err := stop(); err != nil {
		return nil, err
	}
	if err := bw.Close(); err != nil {
		return nil, fmt.Errorf("coreml: weight file: %w", err)
	}
	offsets := make(map[*mil.Value]uint64, len(jobOf))
	for v, j := range jobOf {
		offsets[v] = jobOffsets[j]
	}
	if progress != nil {
		progress(len(vals), len(vals))
	}
	return offsets, nil
}
