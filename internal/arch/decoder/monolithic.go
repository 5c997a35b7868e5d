package decoder

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
)

// Monolithic builds ANEMLL 0.3.5's monolithic model (convert_monolith.sh),
// function "main": input_ids int32 [1,T] through the embeddings, every
// decoder layer and the LM head, with the decoder chunk's position_ids,
// causal_mask, current_pos and KV-cache state. prefill=false is part
// "monolithic" (T = 1, logits or, with Options.Argmax, argmax_idx and
// argmax_val); prefill=true is "monolithic_prefill" (T = BatchSize; as in
// ANEMLL the last layer skips its MLP and the head runs on the first
// token without the final norm, so its logits are meaningless: only the
// KV-cache writes matter; it returns logits even with Argmax, as ANEMLL's
// does). The converter must have one chunk.
//
// The function is assembled from the embeddings, the one-chunk decoder
// function and the LM head exactly as those parts are built on their own,
// so the three parts and the monolithic model compute the same values.
func (c *Converter) Monolithic(prefill bool) (*coreml.Package, error) {
	fnc, d, md, err := c.monolithicFunction("main", prefill, map[valueKey]*mil.Value{})
	if err != nil {
		return nil, err
	}
	return singleFunction(fnc, d, md), nil
}

// MonolithicFull builds the multifunction monolithic package: functions
// "infer" (default) and "prefill", sharing every weight value, with the
// combined metadata ANEMLL writes.
func (c *Converter) MonolithicFull() (*coreml.Package, error) {
	shared := map[valueKey]*mil.Value{}
	inf, di, md, err := c.monolithicFunction("infer", false, shared)
	if err != nil {
		return nil, err
	}
	pre, dp, _, err := c.monolithicFunction("prefill", true, shared)
	if err != nil {
		return nil, err
	}
	di.Name, dp.Name = "infer", "prefill"
	p := mil.NewProgram()
	p.Functions = append(p.Functions, inf, pre)
	return &coreml.Package{
		SpecVersion: coreml.SpecVersionIOS18,
		Program:     p,
		Description: coreml.Description{Functions: []coreml.FunctionDescription{di, dp}, DefaultFunction: "infer",
			Metadata: c.MonolithicFullMetadata(md)},
	}, nil
}

// MonolithicFullMetadata turns the infer function's metadata into the
// combined package's: ANEMLL's combined description plus the batch size.
func (c *Converter) MonolithicFullMetadata(infer coreml.Metadata) coreml.Metadata {
	md := infer
	md.UserDefined = map[string]string{}
	for k, v := range infer.UserDefined {
		md.UserDefined[k] = v
	}
	md.ShortDescription = "Anemll Model: Multifunction Combined"
	md.UserDefined["com.anemll.batch_size"] = strconv.Itoa(c.opts.BatchSize)
	return md
}

// valueKey names a lazy weight value inside a function being replayed: the
// op that holds it and the parameter ("" for a const's value).
type valueKey struct{ op, param string }

func (c *Converter) monolithicFunction(name string, prefill bool, shared map[valueKey]*mil.Value) (*mil.Function, coreml.FunctionDescription, coreml.Metadata, error) {
	var none coreml.FunctionDescription
	if len(c.layout) != 1 {
		return nil, none, coreml.Metadata{}, fmt.Errorf("decoder: a monolithic model holds every layer: convert with one chunk, not %d", len(c.layout))
	}
	cfg, o := c.cfg, c.opts
	C, d := int64(o.ContextLength), int64(cfg.HeadDim)
	T := int64(1)
	if prefill {
		T = int64(o.BatchSize)
	}
	emb, err := c.Embeddings()
	if err != nil {
		return nil, none, coreml.Metadata{}, err
	}
	ffnWS := c.partWeightSet(arch.PartFFN)
	dec, decDesc, err := c.decoderFunction("main", 0, prefill, ffnWS)
	if err != nil {
		return nil, none, coreml.Metadata{}, err
	}
	headWS := c.partWeightSet(arch.PartLMHead)
	argmax := o.Argmax && !prefill
	head, headDesc, err := c.lmHeadFunction(headWS, argmax)
	if err != nil {
		return nil, none, coreml.Metadata{}, err
	}

	b := mil.NewBuilder(name, mil.OpsetIOS18)
	stateShape := []int64{int64(2 * cfg.NumHiddenLayers), int64(cfg.NumKeyValueHeads), int64(o.StateLength), d}
	in := map[string]*mil.Var{
		"input_ids":    b.Input("input_ids", mil.TensorType(mil.Int32, 1, T)),
		"position_ids": b.Input("position_ids", mil.TensorType(mil.Int32, T)),
		"causal_mask":  b.Input("causal_mask", mil.TensorType(mil.Float16, 1, 1, T, C)),
		"current_pos":  b.Input("current_pos", mil.TensorType(mil.Int32, 1)),
		StateName:      b.Input(StateName, mil.StateType(mil.TensorType(mil.Float16, stateShape...))),
	}
	r := &replayer{b: b, shared: shared}
	h, err := r.run(emb.Program.Functions[0], map[string]*mil.Var{"input_ids": in["input_ids"]})
	if err != nil {
		return nil, none, coreml.Metadata{}, fmt.Errorf("decoder: monolithic embeddings: %w", err)
	}
	decIn := map[string]*mil.Var{"hidden_states": h[0]}
	for _, k := range []string{"position_ids", "causal_mask", "current_pos", StateName} {
		decIn[k] = in[k]
	}
	x, err := r.run(dec, decIn)
	if err != nil {
		return nil, none, coreml.Metadata{}, fmt.Errorf("decoder: monolithic layers: %w", err)
	}
	outs, err := r.run(head, map[string]*mil.Var{"hidden_states": x[0]})
	if err != nil {
		return nil, none, coreml.Metadata{}, fmt.Errorf("decoder: monolithic LM head: %w", err)
	}
	b.Output(outs...)
	fnc, err := b.Function()
	if err != nil {
		return nil, none, coreml.Metadata{}, fmt.Errorf("decoder: build monolithic %s: %w", name, err)
	}
	desc := coreml.FunctionDescription{
		Name: name,
		Inputs: []coreml.Feature{
			coreml.ArrayFeature("input_ids", mil.Int32, 1, T),
			coreml.ArrayFeature("position_ids", mil.Int32, T),
			coreml.ArrayFeature("causal_mask", mil.Float16, 1, 1, T, C),
			coreml.ArrayFeature("current_pos", mil.Int32, 1),
		},
		Outputs: headDesc.Outputs,
		States:  decDesc.States,
	}

	short := "Anemll Model Part monolithic converted to CoreML"
	extra := map[string]string{}
	if prefill {
		short = "Anemll Model Part monolithic_prefill converted to CoreML"
		extra["com.anemll.batch_size"] = strconv.Itoa(o.BatchSize)
	} else {
		for k, v := range c.argmaxMeta() {
			if k != "com.anemll.argmax_in_model" || argmax {
				extra[k] = v
			}
		}
	}
	md := c.metadata(short, ffnWS, extra)
	// The LUT widths of the three parts may differ (--lut-embeddings,
	// --lut-lmhead); list every matrix left dense.
	var dense []string
	if w := emb.Description.Metadata.UserDefined["com.anemll-go.dense_weights"]; w != "" {
		dense = append(dense, strings.Split(w, ",")...)
	}
	dense = append(dense, ffnWS.dense...)
	dense = append(dense, headWS.dense...)
	if c.LUTBits(arch.PartEmbeddings) > 0 || c.LUTBits(arch.PartFFN) > 0 || c.LUTBits(arch.PartLMHead) > 0 {
		md.UserDefined["com.anemll-go.dense_weights"] = strings.Join(dense, ",")
		md.UserDefined["com.anemll-go.lut_bits"] = fmt.Sprintf("embeddings=%d,ffn=%d,lm_head=%d",
			c.LUTBits(arch.PartEmbeddings), c.LUTBits(arch.PartFFN), c.LUTBits(arch.PartLMHead))
	}
	return fnc, desc, md, nil
}

// replayer copies the ops of built functions into one builder, binding
// their inputs to vars of the builder and renaming ops whose names are
// already taken. Lazy weight values are shared through shared, keyed by
// op name, so two functions replayed with the same map hold the same
// values (and the writer stores and computes each once).
type replayer struct {
	b      *mil.Builder
	shared map[valueKey]*mil.Value
}

// run replays src with its inputs bound to bind and returns the vars of
// src's outputs.
func (r *replayer) run(src *mil.Function, bind map[string]*mil.Var) ([]*mil.Var, error) {
	vars := map[string]*mil.Var{}
	for _, in := range src.Inputs {
		v, ok := bind[in.Name]
		if !ok {
			return nil, fmt.Errorf("input %q of %s is not bound", in.Name, src.Name)
		}
		vars[in.Name] = v
	}
	share := func(op, param string, v *mil.Value) *mil.Value {
		if v == nil || v.Source == nil || v.Data != nil {
			return v
		}
		k := valueKey{op, param}
		if got, ok := r.shared[k]; ok && got.Type.Equal(v.Type) {
			return got
		}
		r.shared[k] = v
		return v
	}
	for _, op := range src.Body.Ops {
		name := r.b.UniqueName(op.Name)
		if op.Type == "const" {
			vars[op.Outputs[0].Name] = r.b.Const(name, share(op.Name, "", op.ConstValue()))
			continue
		}
		in := mil.In{}
		for _, p := range op.Inputs {
			switch {
			case len(p.Args) == 1 && p.Args[0].Value != nil:
				in[p.Param] = mil.Literal{Value: share(op.Name, p.Param, p.Args[0].Value)}
			case len(p.Args) == 1:
				v, ok := vars[p.Args[0].Name]
				if !ok {
					return nil, fmt.Errorf("op %s reads undefined %q", op.Name, p.Args[0].Name)
				}
				in[p.Param] = v
			default:
				list := make([]*mil.Var, len(p.Args))
				for i, a := range p.Args {
					v, ok := vars[a.Name]
					if !ok || a.Value != nil {
						return nil, fmt.Errorf("op %s: unsupported argument %d of %q", op.Name, i, p.Param)
					}
					list[i] = v
				}
				in[p.Param] = list
			}
		}
		var outs []*mil.Var
		if mil.KnownOp(op.Type) {
			outs = r.b.OpN(op.Type, name, in)
		} else {
			types := make([]mil.Type, len(op.Outputs))
			for i, o := range op.Outputs {
				types[i] = o.Type
			}
			outs = r.b.OpTyped(op.Type, name, in, types...)
		}
		if err := r.b.Err(); err != nil {
			return nil, err
		}
		if len(outs) != len(op.Outputs) {
			return nil, fmt.Errorf("op %s: %d outputs, replayed %d", op.Name, len(op.Outputs), len(outs))
		}
		for i, o := range op.Outputs {
			vars[o.Name] = outs[i]
		}
	}
	res := make([]*mil.Var, len(src.Body.Outputs))
	for i, n := range src.Body.Outputs {
		v, ok := vars[n]
		if !ok {
			return nil, fmt.Errorf("output %q of %s is undefined", n, src.Name)
		}
		res[i] = v
	}
	return res, nil
}
