// Package spec holds the Go types for the subset of the Core ML protobuf
// schema (package CoreML.Specification) that anemll reads and writes:
// Model, ModelDescription, FeatureType and friends. The ML-program messages
// (package CoreML.Specification.MILSpec) live in the milspec subpackage.
//
// The .proto sources are in proto/; the .pb.go files are generated and
// committed so that building needs no protoc.
package spec

//go:generate protoc -I proto --go_out=. --go_opt=module=github.com/anemll/anemll/internal/coreml/spec proto/coreml_feature_types.proto proto/coreml_mil.proto proto/coreml_model.proto
