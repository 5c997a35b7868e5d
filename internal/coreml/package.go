// Package coreml reads and writes Core ML model packages (.mlpackage): the
// model description (inputs, outputs, states, functions, metadata), the ML
// Program in MILSpec protobuf form, and the weight file.
package coreml

import (
	"fmt"
	"io"

	"github.com/anemll/anemll/internal/mil"
)

// SpecVersionIOS18 is the specification version of iOS18/macOS15 models,
// the first with states and multifunction programs.
const SpecVersionIOS18 = 9

// Package is a Core ML ML Program model in memory.
type Package struct {
	// SpecVersion is Model.specificationVersion (9 for iOS18).
	SpecVersion int32
	Description Description
	Program     *mil.Program

	closer io.Closer // weight files of a package read with Open
}

// Description is the model's interface: its features and metadata. A
// single-function model fills Inputs, Outputs and States; a multifunction
// model fills Functions and DefaultFunction instead.
type Description struct {
	Inputs, Outputs, States []Feature
	Functions               []FunctionDescription
	DefaultFunction         string
	Metadata                Metadata
}

// FunctionDescription is the interface of one function of a multifunction
// model.
type FunctionDescription struct {
	Name                    string
	Inputs, Outputs, States []Feature
}

// FeatureKind is the kind of a feature's type.
type FeatureKind uint8

// Feature kinds we model. Core ML has others (images, dictionaries, ...)
// that LLM packages do not use.
const (
	// MultiArray is an N-d array input or output.
	MultiArray FeatureKind = iota
	// StateFeature is an iOS18 model state wrapping a fixed-shape array.
	StateFeature
)

// Feature describes one input, output or state.
type Feature struct {
	Name             string
	ShortDescription string
	Kind             FeatureKind
	// DType is the array element type: mil.Float16, mil.Float32,
	// mil.Float64 or mil.Int32 (Core ML's ArrayDataType values).
	DType mil.DType
	// Shape is the fixed or default shape; empty when Core ML leaves it
	// unspecified (outputs with symbolic shape).
	Shape []int64
	// Enumerated lists the allowed shapes of a flexible input (default
	// first); nil for fixed shapes.
	Enumerated [][]int64
	// Ranges gives [lower, upper] per dimension of a range-flexible input.
	Ranges [][2]int64
	// Optional marks an optional input.
	Optional bool
}

// Metadata is the model's human-facing metadata.
type Metadata struct {
	ShortDescription string
	Version          string
	Author           string
	License          string
	// UserDefined holds free-form string pairs (ANEMLL's com.anemll.* keys).
	UserDefined map[string]string
}

// ArrayFeature returns a multi-array feature.
func ArrayFeature(name string, dt mil.DType, shape ...int64) Feature {
	return Feature{Name: name, Kind: MultiArray, DType: dt, Shape: shape}
}

// StateOf returns a state feature wrapping an array of dt and shape.
func StateOf(name string, dt mil.DType, shape ...int64) Feature {
	return Feature{Name: name, Kind: StateFeature, DType: dt, Shape: shape}
}

// FunctionDescription returns the description of function name: the
// per-function entry of a multifunction model, or the top-level features
// of a single-function model (whose function is "main").
func (d *Description) Function(name string) (FunctionDescription, error) {
	if len(d.Functions) == 0 {
		if name != "" && name != "main" {
			return FunctionDescription{}, fmt.Errorf("coreml: model has one function, not %q", name)
		}
		return FunctionDescription{Name: "main", Inputs: d.Inputs, Outputs: d.Outputs, States: d.States}, nil
	}
	if name == "" {
		name = d.DefaultFunction
	}
	for _, f := range d.Functions {
		if f.Name == name {
			return f, nil
		}
	}
	return FunctionDescription{}, fmt.Errorf("coreml: model has no function %q", name)
}
