// Package milspec holds the Go types for the Core ML ML-program protobuf
// schema (package CoreML.Specification.MILSpec): Program, Function, Block,
// Operation, ValueType, Value and friends. The types are generated from
// ../proto/coreml_mil.proto; see the spec package for how to regenerate.
package milspec
