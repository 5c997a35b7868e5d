package runtime

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/anemll/anemll/internal/mil"
)

// ErrUnsupported is wrapped by load errors for op types, dtypes or op
// forms the interpreter does not implement.
var ErrUnsupported = errors.New("runtime: unsupported")

// Model is a loaded program: every function prepared and ready to run.
type Model struct {
	funcs map[string]*Function
	names []string
}

// Function is one prepared MIL function. Predict may be called from several
// goroutines at once as long as each uses its own State.
type Function struct {
	name    string
	inputs  []mil.NamedType
	nslots  int
	consts  []*Tensor // template of slot values: constants filled in
	inSlot  map[string]int
	states  []stateDecl
	nodes   []*node
	outputs []string
	outSlot []int
	// buf maps a slot to the reused buffer its op writes (see planBuffers);
	// nbuf counts the buffers.
	buf  []int
	nbuf int
	pool sync.Pool
}

type stateDecl struct {
	name  string
	dtype mil.DType
	shape []int
}

// node is one runnable op with its input bindings resolved to slots.
type node struct {
	op   *mil.Op
	kern kernel
	args map[string][]int
	outs []int
	// state is the state input name for read_state/write_state and for
	// in-place slice_update.
	state string
	// inplace: slice_update writes straight into the state buffer;
	// write_state may copy into the state buffer (else it reallocates).
	inplace bool
	// widen lists the argument slots that may hold an fp16 state (or a
	// view of one) stored as half bits, where the kernel reads F: Predict
	// gives the kernel a widened copy (see planStateWidening).
	widen []int
}

// kernel runs one op.
type kernel func(c *call) error

// State holds the tensors of a function's state inputs (Core ML's MLState),
// keyed by state name. An fp16 state is stored as half bits, its real
// size (a KV cache of n values takes 2n bytes, not 4n). A State made by one
// function can be used by any function or model whose state inputs have
// the same names and shapes. A State must not be used by two Predict calls
// at once.
type State struct {
	t map[string]*Tensor
}

// newStateTensor returns a zero tensor for a state of dt and shape: half
// bits for fp16, else as Zeros.
func newStateTensor(dt mil.DType, shape []int) *Tensor {
	if dt == mil.Float16 {
		return &Tensor{DType: dt, Shape: cloneInts(shape), half: make([]uint16, numel(shape))}
	}
	return Zeros(dt, shape)
}

// Tensor returns a copy of the current value of the state named name
// (fp16 values widened into F), or nil.
func (s *State) Tensor(name string) *Tensor {
	t := s.t[name]
	if t == nil {
		return nil
	}
	return t.Clone()
}

// Names returns the state names, sorted.
func (s *State) Names() []string {
	n := make([]string, 0, len(s.t))
	for k := range s.t {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Bytes returns the memory the state values take as stored: 2 bytes per
// fp16 value, 4 per fp32 or integer value.
func (s *State) Bytes() int64 {
	var n int64
	for _, t := range s.t {
		n += 2*int64(len(t.half)) + 4*int64(len(t.F)+len(t.I))
	}
	return n
}

// Clone returns a deep copy of s, stored as s is (a snapshot).
func (s *State) Clone() *State {
	c := &State{t: make(map[string]*Tensor, len(s.t))}
	for n, t := range s.t {
		c.t[n] = &Tensor{DType: t.DType, Shape: cloneInts(t.Shape),
			F: slices.Clone(t.F), I: slices.Clone(t.I), half: slices.Clone(t.half)}
	}
	return c
}

// CopyFrom sets s's values to from's (a snapshot of the same states, as
// Clone made it), in place. It fails if the names or shapes differ.
func (s *State) CopyFrom(from *State) error {
	if len(from.t) != len(s.t) {
		return fmt.Errorf("runtime: state has %d tensors, snapshot %d", len(s.t), len(from.t))
	}
	for n, t := range s.t {
		f := from.t[n]
		if f == nil || f.DType != t.DType || !equalInts(f.Shape, t.Shape) {
			return fmt.Errorf("runtime: snapshot does not match state %q (%s)", n, t)
		}
	}
	for n, t := range s.t {
		f := from.t[n]
		storeState(t, f)
	}
	return nil
}

// Reset sets every state value to zero (a fresh state), in place.
func (s *State) Reset() {
	for _, t := range s.t {
		clear(t.F)
		clear(t.I)
		clear(t.half)
	}
}

// storeState copies src's values into the state tensor dst of the same
// dtype and shape, in dst's storage.
func storeState(dst, src *Tensor) {
	switch {
	case dst.half != nil && src.half != nil:
		copy(dst.half, src.half)
	case dst.half != nil:
		floatToHalf(dst.half, src.F)
	case src.half != nil:
		halfToFloat(dst.F, src.half)
	default:
		copy(dst.F, src.F)
		copy(dst.I, src.I)
	}
}

// Load prepares every function of p: every op is checked against the
// implemented set, and each constant's bytes are read once (lazy sources
// called once, one at a time) into the form its uses need (see
// materialize): large matrix weights stay fp16 or LUT-packed, the rest is
// decoded to fp32. Functions that share a value share its tensor.
func Load(p *mil.Program) (*Model, error) {
	if p == nil || len(p.Functions) == 0 {
		return nil, errors.New("runtime: program has no functions")
	}
	m := &Model{funcs: map[string]*Function{}}
	cache := newLoadCache() // shared weights across functions
	for _, f := range p.Functions {
		if _, dup := m.funcs[f.Name]; dup {
			return nil, fmt.Errorf("runtime: duplicate function %q", f.Name)
		}
		fn, err := loadFunction(f, cache)
		if err != nil {
			return nil, err
		}
		m.funcs[f.Name] = fn
		m.names = append(m.names, f.Name)
	}
	sort.Strings(m.names)
	fns := make([]*Function, 0, len(m.names))
	for _, name := range m.names {
		fns = append(fns, m.funcs[name])
	}
	if err := materialize(fns); err != nil {
		return nil, err
	}
	return m, nil
}

// Function returns the prepared function named name.
func (m *Model) Function(name string) (*Function, error) {
	f, ok := m.funcs[name]
	if !ok {
		return nil, fmt.Errorf("runtime: no function %q (have %v)", name, m.names)
	}
	return f, nil
}

// FunctionNames returns the names of the model's functions, sorted.
func (m *Model) FunctionNames() []string { return append([]string(nil), m.names...) }

// Name returns the function's name.
func (f *Function) Name() string { return f.name }

// Inputs returns the function's inputs (tensors and states) as declared.
func (f *Function) Inputs() []mil.NamedType { return append([]mil.NamedType(nil), f.inputs...) }

// Outputs returns the names of the function's outputs, in order.
func (f *Function) Outputs() []string { return append([]string(nil), f.outputs...) }

// NewState returns zero-filled tensors for each state input of f (like
// Core ML's make_state).
func (f *Function) NewState() *State {
	s := &State{t: map[string]*Tensor{}}
	for _, d := range f.states {
		s.t[d.name] = newStateTensor(d.dtype, d.shape)
	}
	return s
}

type loader struct {
	fn     *Function
	milFn  *mil.Function
	slot   map[string]int
	consts map[string]*mil.Value // const op name -> value
	cache  *loadCache
}

// loadCache holds the tensors Load has prepared, keyed by the identity of
// the values they come from, so functions that share a weight (the same
// *mil.Value) share one decoded or dequantized tensor.
type loadCache struct {
	vals map[*mil.Value]*Tensor
	luts map[lutKey]*Tensor
}

// lutKey identifies one constexpr_lut_to_dense result: its indices and
// lut values and its vector axis.
type lutKey struct {
	indices, lut *mil.Value
	axis         int
	hasAxis      bool
}

func newLoadCache() *loadCache {
	return &loadCache{vals: map[*mil.Value]*Tensor{}, luts: map[lutKey]*Tensor{}}
}

func loadFunction(f *mil.Function, cache *loadCache) (*Function, error) {
	if f.Body == nil {
		return nil, fmt.Errorf("runtime: function %q has no body", f.Name)
	}
	fn := &Function{name: f.Name, inputs: append([]mil.NamedType(nil), f.Inputs...), inSlot: map[string]int{}}
	l := &loader{fn: fn, milFn: f, slot: map[string]int{}, consts: map[string]*mil.Value{}, cache: cache}
	for _, in := range f.Inputs {
		s := l.newSlot(in.Name)
		switch in.Type.Kind {
		case mil.KindTensor:
			fn.inSlot[in.Name] = s
		case mil.KindState:
			if in.Type.Elem == nil || !in.Type.Elem.Static() {
				return nil, fmt.Errorf("runtime: function %q: state %q must wrap a fixed-shape tensor", f.Name, in.Name)
			}
			e := in.Type.Elem
			if !isFloat(e.DType) && !supportedInt(e.DType) {
				return nil, fmt.Errorf("runtime: function %q: state %q dtype %s: %w", f.Name, in.Name, e.DType, ErrUnsupported)
			}
			fn.states = append(fn.states, stateDecl{name: in.Name, dtype: e.DType, shape: toInts(e.Shape)})
		default:
			return nil, fmt.Errorf("runtime: function %q: input %q of type %s: %w", f.Name, in.Name, in.Type, ErrUnsupported)
		}
	}
	for _, op := range f.Body.Ops {
		if err := l.addOp(op); err != nil {
			return nil, err
		}
	}
	for _, o := range f.Body.Outputs {
		s, err := l.ref(o)
		if err != nil {
			return nil, fmt.Errorf("runtime: function %q output: %w", f.Name, err)
		}
		fn.outputs = append(fn.outputs, o)
		fn.outSlot = append(fn.outSlot, s)
	}
	fn.nslots = len(l.slot)
	// consts may have grown past nslots for literal slots: keep in step.
	for len(fn.consts) < fn.nslots {
		fn.consts = append(fn.consts, nil)
	}
	planInPlace(fn)
	planStateWidening(fn)
	planBuffers(fn)
	return fn, nil
}

func (l *loader) newSlot(name string) int {
	s := len(l.slot)
	if name == "" {
		name = fmt.Sprintf("\x00lit%d", s)
	}
	l.slot[name] = s
	for len(l.fn.consts) <= s {
		l.fn.consts = append(l.fn.consts, nil)
	}
	return s
}

// ref resolves a value name to its slot, decoding a const on first use.
func (l *loader) ref(name string) (int, error) {
	s, ok := l.slot[name]
	if !ok {
		return 0, fmt.Errorf("%q is not defined", name)
	}
	if v, isConst := l.consts[name]; isConst && l.fn.consts[s] == nil {
		t, err := l.decode(name, v)
		if err != nil {
			return 0, fmt.Errorf("const %q: %w", name, err)
		}
		l.fn.consts[s] = t
	}
	return s, nil
}

func (l *loader) decode(name string, v *mil.Value) (*Tensor, error) {
	if t, ok := l.cache.vals[v]; ok {
		return t, nil
	}
	var t *Tensor
	if ty := v.Type; ty.Kind == mil.KindTensor && ty.DType == mil.Float16 && ty.Static() && len(ty.Shape) >= 2 && ty.NumElements() >= int64(halfWeightMin) {
		// Read later, once its uses are known (see materialize).
		t = &Tensor{DType: mil.Float16, Shape: toInts(ty.Shape), pending: &pendingConst{name: name, val: v}}
	} else {
		var err error
		if t, err = decodeValue(v); err != nil {
			return nil, err
		}
	}
	l.cache.vals[v] = t
	return t, nil
}

// constValue returns the constant bound to an argument: a literal, or the
// value of a const op.
func (l *loader) constValue(a mil.Arg) (*mil.Value, error) {
	if a.Value != nil {
		return a.Value, nil
	}
	if v, ok := l.consts[a.Name]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("%q is not a constant", a.Name)
}

func (l *loader) addOp(op *mil.Op) error {
	fail := func(err error) error {
		return fmt.Errorf("runtime: function %q, op %q (%s): %w", l.milFn.Name, op.Name, op.Type, err)
	}
	if len(op.Blocks) > 0 {
		return fail(fmt.Errorf("ops with nested blocks: %w", ErrUnsupported))
	}
	switch op.Type {
	case "const":
		v := op.Attr("val")
		if v == nil || len(op.Outputs) != 1 {
			return fail(errors.New("const needs a val and one output"))
		}
		name := op.Outputs[0].Name
		if _, dup := l.slot[name]; dup {
			return fail(fmt.Errorf("%q defined twice", name))
		}
		l.newSlot(name)
		l.consts[name] = v
		return nil
	case "constexpr_lut_to_dense":
		t, err := l.lutOp(op)
		if err != nil {
			return fail(err)
		}
		if len(op.Outputs) != 1 {
			return fail(errors.New("want one output"))
		}
		name := op.Outputs[0].Name
		if _, dup := l.slot[name]; dup {
			return fail(fmt.Errorf("%q defined twice", name))
		}
		s := l.newSlot(name)
		l.fn.consts[s] = t
		return nil
	}
	k, ok := kernels[op.Type]
	if !ok {
		return fmt.Errorf("runtime: function %q, op %q: op type %q is not implemented: %w", l.milFn.Name, op.Name, op.Type, ErrUnsupported)
	}
	n := &node{op: op, kern: k, args: map[string][]int{}}
	for _, in := range op.Inputs {
		for _, a := range in.Args {
			var s int
			if a.Value != nil {
				t, err := l.decode(op.Name+"."+in.Param, a.Value)
				if err != nil {
					return fail(fmt.Errorf("literal %q: %w", in.Param, err))
				}
				s = l.newSlot("")
				l.fn.consts[s] = t
			} else {
				var err error
				if s, err = l.ref(a.Name); err != nil {
					return fail(fmt.Errorf("input %q: %w", in.Param, err))
				}
			}
			n.args[in.Param] = append(n.args[in.Param], s)
		}
	}
	if op.Type == "read_state" || op.Type == "write_state" {
		args := op.Input("input")
		if len(args) != 1 || args[0].Name == "" {
			return fail(errors.New("input must name a state"))
		}
		if !slices.ContainsFunc(l.fn.states, func(d stateDecl) bool { return d.name == args[0].Name }) {
			return fail(fmt.Errorf("%q is not a state input", args[0].Name))
		}
		n.state = args[0].Name
	}
	for _, o := range op.Outputs {
		if _, dup := l.slot[o.Name]; dup {
			return fail(fmt.Errorf("%q defined twice", o.Name))
		}
		n.outs = append(n.outs, l.newSlot(o.Name))
	}
	l.fn.nodes = append(l.fn.nodes, n)
	return nil
}

// planInPlace marks the slice_update and write_state ops that may write
// straight into a state buffer without changing what any op observes.
//
// read_state returns the state buffer itself (no copy), and view ops
// (reshape, expand_dims, squeeze, identity) share their input's buffer, so
// every such value aliases the state. A slice_update of an alias x of state
// s runs in place when neither x nor any other alias is used after it and
// its result is the next thing written to s (with no read of s between).
// A write_state copies into the buffer when no alias is used after it;
// otherwise it gives the state a fresh buffer.
func planInPlace(fn *Function) {
	lastUse := make([]int, fn.nslots)
	for i := range lastUse {
		lastUse[i] = -1
	}
	for i, n := range fn.nodes {
		for _, ss := range n.args {
			for _, s := range ss {
				lastUse[s] = i
			}
		}
	}
	for _, s := range fn.outSlot {
		lastUse[s] = len(fn.nodes)
	}
	alias := map[int]string{} // slot -> state it aliases
	usedAfter := func(st string, k int, except int) bool {
		for s, name := range alias {
			if name == st && s != except && lastUse[s] > k {
				return true
			}
		}
		return false
	}
	for k, n := range fn.nodes {
		switch n.op.Type {
		case "read_state":
			alias[n.outs[0]] = n.state
		case "reshape", "expand_dims", "squeeze", "identity":
			if x := n.args["x"]; len(x) == 1 {
				if st, ok := alias[x[0]]; ok {
					alias[n.outs[0]] = st
				}
			}
		case "slice_update":
			x := n.args["x"]
			if len(x) != 1 {
				continue
			}
			st, ok := alias[x[0]]
			if !ok || lastUse[x[0]] > k || usedAfter(st, k, x[0]) {
				continue
			}
			u := n.outs[0]
			// The next op touching st must be write_state(st, u).
			okWrite := false
			for _, m := range fn.nodes[k+1:] {
				if m.state != st {
					continue
				}
				if m.op.Type == "write_state" {
					d := m.args["data"]
					okWrite = len(d) == 1 && d[0] == u
				}
				break
			}
			if okWrite {
				n.inplace = true
				n.state = st
				alias[u] = st
			}
		case "write_state":
			n.inplace = !usedAfter(n.state, k, -1)
		}
	}
}

// readsHalf reports whether the kernel of op reads its param p stored as
// half bits (a state, or a view of one).
func readsHalf(op, p string) bool {
	switch op {
	case "reshape", "expand_dims", "squeeze", "identity", "slice_by_index", "slice_update", "gather":
		return p == "x"
	case "write_state":
		return p == "data"
	}
	return false
}

// planStateWidening marks, on every node, the argument slots that may hold
// an fp16 state stored as half bits where the kernel does not read half:
// the values read_state returns, the views of them (reshape, expand_dims,
// squeeze, identity) and in-place slice_update results.
func planStateWidening(fn *Function) {
	halfState := map[string]bool{}
	for _, d := range fn.states {
		halfState[d.name] = d.dtype == mil.Float16
	}
	alias := map[int]bool{}
	for _, n := range fn.nodes {
		for p, ss := range n.args {
			if readsHalf(n.op.Type, p) {
				continue
			}
			for _, s := range ss {
				if alias[s] && !slices.Contains(n.widen, s) {
					n.widen = append(n.widen, s)
				}
			}
		}
		slices.Sort(n.widen)
		switch {
		case n.op.Type == "read_state":
			alias[n.outs[0]] = halfState[n.state]
		case viewOp(n):
			if x := n.args["x"]; len(x) == 1 && alias[x[0]] {
				alias[n.outs[0]] = true
			}
		}
	}
}

// viewOp reports whether node n's output shares its x input's buffer.
func viewOp(n *node) bool {
	switch n.op.Type {
	case "reshape", "expand_dims", "squeeze", "identity":
		return true
	case "slice_update":
		return n.inplace
	}
	return false
}

// planBuffers assigns every op output a buffer so that a value's buffer is
// reused once the value, and every view of it, is dead: the working set of
// a call is the values live at once, not one buffer per value. An output
// gets a buffer that no live value holds (the smallest free one that fits
// its declared size, else the largest free one, else a new one); buffers
// of values whose last use is op k are freed after op k runs, so an op
// never writes a buffer one of its inputs is held in. Function outputs
// stay live to the end.
func planBuffers(fn *Function) {
	root := make([]int, fn.nslots) // the slot owning the buffer a slot's data lives in; -1 none
	for i := range root {
		root[i] = -1
	}
	owner := func(s int) int {
		if s < 0 || s >= len(root) {
			return -1
		}
		return root[s]
	}
	for _, n := range fn.nodes {
		for _, o := range n.outs {
			root[o] = o
		}
		if viewOp(n) && len(n.outs) == 1 {
			if x := n.args["x"]; len(x) == 1 {
				root[n.outs[0]] = owner(x[0])
			}
		}
	}
	last := make([]int, fn.nslots) // last op index using a buffer (by owner)
	for i := range last {
		last[i] = -1
	}
	for k, n := range fn.nodes {
		for _, o := range n.outs {
			if r := root[o]; r >= 0 {
				last[r] = max(last[r], k)
			}
		}
		for _, ss := range n.args {
			for _, s := range ss {
				if r := owner(s); r >= 0 {
					last[r] = max(last[r], k)
				}
			}
		}
	}
	for _, s := range fn.outSlot {
		if r := owner(s); r >= 0 {
			last[r] = len(fn.nodes)
		}
	}
	fn.buf = make([]int, fn.nslots)
	for i := range fn.buf {
		fn.buf[i] = -1
	}
	type buffer struct{ id, size int }
	var free []buffer
	size := map[int]int{} // buffer id -> largest declared size
	freeAt := make([][]int, len(fn.nodes)+1)
	for k, n := range fn.nodes {
		for i, o := range n.outs {
			if root[o] != o {
				continue
			}
			want := -1
			if t := n.op.Outputs[i].Type; t.Kind == mil.KindTensor && t.Static() {
				want = int(t.NumElements())
			}
			pick := -1
			for j, b := range free {
				switch {
				case pick < 0:
					pick = j
				case want >= 0 && b.size >= want && (free[pick].size < want || b.size < free[pick].size):
					pick = j
				case (want < 0 || free[pick].size < want) && b.size > free[pick].size:
					pick = j
				}
			}
			var id int
			if pick >= 0 {
				id = free[pick].id
				free = append(free[:pick], free[pick+1:]...)
			} else {
				id = fn.nbuf
				fn.nbuf++
			}
			size[id] = max(size[id], want)
			fn.buf[o] = id
			freeAt[max(last[o], k)] = append(freeAt[max(last[o], k)], id)
		}
		for _, id := range freeAt[k] {
			free = append(free, buffer{id, size[id]})
		}
	}
}

// execCtx is the per-call working set: slot values and reusable buffers.
type execCtx struct {
	vals []*Tensor
	buf  []int // Function.buf
	fbuf [][]float32
	ibuf [][]int32
	st   *State
	// scratch for kernels (transposes, packed operands).
	scratch [][]float32
}

func (f *Function) getCtx() *execCtx {
	if c, ok := f.pool.Get().(*execCtx); ok {
		return c
	}
	return &execCtx{
		vals: make([]*Tensor, f.nslots),
		buf:  f.buf,
		fbuf: make([][]float32, f.nbuf),
		ibuf: make([][]int32, f.nbuf),
	}
}

// Predict runs the function on inputs (by name) and st (required when the
// function has state inputs) and returns its outputs by name. Each input's
// dtype and rank must match the declared type, and every known dimension
// its size; inputs the function does not declare are ignored. States are
// updated in place.
func (f *Function) Predict(inputs map[string]*Tensor, st *State) (map[string]*Tensor, error) {
	for _, in := range f.inputs {
		if in.Type.Kind != mil.KindTensor {
			continue
		}
		t, ok := inputs[in.Name]
		if !ok || t == nil {
			return nil, fmt.Errorf("runtime: %s: missing input %q", f.name, in.Name)
		}
		if err := checkType(t, in.Type); err != nil {
			return nil, fmt.Errorf("runtime: %s: input %q: %w", f.name, in.Name, err)
		}
	}
	if len(f.states) > 0 {
		if st == nil {
			return nil, fmt.Errorf("runtime: %s: function has states; pass a State", f.name)
		}
		for _, d := range f.states {
			t := st.t[d.name]
			if t == nil {
				return nil, fmt.Errorf("runtime: %s: State has no %q", f.name, d.name)
			}
			if t.DType != d.dtype || !equalInts(t.Shape, d.shape) {
				return nil, fmt.Errorf("runtime: %s: state %q is %s, function wants %s%v", f.name, d.name, t, d.dtype, d.shape)
			}
		}
	}
	c := f.getCtx()
	defer f.pool.Put(c)
	copy(c.vals, f.consts)
	c.st = st
	defer func() {
		clear(c.vals)
		c.st = nil
	}()
	for name, s := range f.inSlot {
		c.vals[s] = inputs[name]
	}
	cl := call{ctx: c}
	var saved []*Tensor
	for _, n := range f.nodes {
		cl.n = n
		saved = saved[:0]
		for _, s := range n.widen {
			t := c.vals[s]
			saved = append(saved, t)
			if t != nil && t.half != nil && t.F == nil {
				c.vals[s] = t.Clone()
			}
		}
		err := n.kern(&cl)
		for i, s := range n.widen {
			c.vals[s] = saved[i]
		}
		if err != nil {
			return nil, fmt.Errorf("runtime: %s: op %q (%s): %w", f.name, n.op.Name, n.op.Type, err)
		}
		for i, s := range n.outs {
			t := c.vals[s]
			if t == nil {
				return nil, fmt.Errorf("runtime: %s: op %q (%s) produced no output %d", f.name, n.op.Name, n.op.Type, i)
			}
			if want := n.op.Outputs[i].Type; want.Kind == mil.KindTensor && want.DType != t.DType {
				return nil, fmt.Errorf("runtime: %s: op %q (%s) produced %s, declared %s", f.name, n.op.Name, n.op.Type, t, want)
			}
		}
	}
	out := make(map[string]*Tensor, len(f.outputs))
	for i, name := range f.outputs {
		t := c.vals[f.outSlot[i]]
		if t == nil {
			return nil, fmt.Errorf("runtime: %s: output %q has no value", f.name, name)
		}
		out[name] = t.Clone()
	}
	return out, nil
}

func checkType(t *Tensor, want mil.Type) error {
	if t.DType != want.DType {
		return fmt.Errorf("dtype %s, want %s", t.DType, want.DType)
	}
	if len(t.Shape) != len(want.Shape) {
		return fmt.Errorf("shape %v has rank %d, want %s", t.Shape, len(t.Shape), mil.ShapeString(want.Shape))
	}
	for i, d := range want.Shape {
		if d >= 0 && int64(t.Shape[i]) != d {
			return fmt.Errorf("shape %v, want %s", t.Shape, mil.ShapeString(want.Shape))
		}
		if t.Shape[i] < 0 {
			return fmt.Errorf("negative dimension in %v", t.Shape)
		}
	}
	n := t.Len()
	if (t.IsFloat() && len(t.F) != n) || (!t.IsFloat() && len(t.I) != n) {
		return fmt.Errorf("%d elements held for shape %v", max(len(t.F), len(t.I)), t.Shape)
	}
	return nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func toInts(s []int64) []int {
	out := make([]int, len(s))
	for i, d := range s {
		out[i] = int(d)
	}
	return out
}

func supportedInt(dt mil.DType) bool {
	switch dt {
	case mil.Int32, mil.Int16, mil.Int8, mil.UInt8, mil.UInt16, mil.Bool:
		return true
	}
	return false
}

// decodeValue turns a constant tensor value into a Tensor, reading lazy
// bytes once.
func decodeValue(v *mil.Value) (*Tensor, error) {
	ty := v.Type
	if ty.Kind != mil.KindTensor || !ty.Static() {
		return nil, fmt.Errorf("constant of type %s: %w", ty, ErrUnsupported)
	}
	shape := toInts(ty.Shape)
	t := &Tensor{DType: ty.DType, Shape: shape}
	switch ty.DType {
	case mil.String:
		if len(v.Strings) != numel(shape) {
			return nil, fmt.Errorf("%s constant has %d strings", ty, len(v.Strings))
		}
		t.S = append([]string(nil), v.Strings...)
	case mil.Float16, mil.Float32:
		f, err := v.Floats()
		if err != nil {
			return nil, err
		}
		t.F = f
	case mil.Int32, mil.Int16, mil.Int8, mil.UInt8, mil.UInt16, mil.Bool,
		mil.UInt1, mil.UInt2, mil.UInt3, mil.UInt4, mil.UInt6, mil.Int4:
		ints, err := v.Ints()
		if err != nil {
			return nil, err
		}
		t.I = make([]int32, len(ints))
		for i, x := range ints {
			t.I[i] = int32(x) // every listed dtype fits in int32
		}
	default:
		return nil, fmt.Errorf("constant dtype %s: %w", ty.DType, ErrUnsupported)
	}
	return t, nil
}
