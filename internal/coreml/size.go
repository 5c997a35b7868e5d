package coreml

import (
	"crypto/sha256"
	"fmt"

	"github.com/anemll/anemll/internal/coreml/blob"
	"github.com/anemll/anemll/internal/coreml/manifest"
	"github.com/anemll/anemll/internal/coreml/spec"
	"github.com/anemll/anemll/internal/mil"
)

// SizeReport is the on-disk size of a package as Write would store it.
type SizeReport struct {
	// Weights is weight.bin's size, Model model.mlmodel's, Manifest
	// Manifest.json's.
	Weights, Model, Manifest int64
	// Blobs is the number of weight-file constants.
	Blobs int
}

// Total is the sum of the package's files.
func (s SizeReport) Total() int64 { return s.Weights + s.Model + s.Manifest }

// PackageSize computes the size of the files Write would produce for pkg
// without producing any weight data: blob sizes come from each constant's
// type (element count and width, sub-byte types packed), laid out as the
// weight-file writer lays them out, and the model file is encoded with
// those offsets. It is exact unless two distinct constants hold identical
// bytes (the writer then stores them once, so the real package is smaller).
func PackageSize(pkg *Package) (SizeReport, error) {
	var r SizeReport
	offsets := map[*mil.Value]uint64{}
	type origin struct {
		file string
		off  uint64
	}
	byOrigin := map[origin]uint64{}
	pos := uint64(blob.HeaderSize)
	for _, v := range blobValues(pkg.Program) {
		if _, done := offsets[v]; done {
			continue
		}
		key := origin{v.BlobFile, v.BlobOffset}
		if v.BlobFile != "" {
			if off, ok := byOrigin[key]; ok {
				offsets[v] = off
				continue
			}
		}
		dt, ok := blobDTypes[v.Type.DType]
		if !ok {
			return r, fmt.Errorf("coreml: %s constants cannot be stored in the weight file", v.Type.DType)
		}
		size, _, ok := dt.PackedSize(v.Type.NumElements())
		if !ok {
			return r, fmt.Errorf("coreml: constant of type %s has no size", v.Type)
		}
		meta := (pos + blob.Alignment - 1) / blob.Alignment * blob.Alignment
		offsets[v] = meta
		if v.BlobFile != "" {
			byOrigin[key] = meta
		}
		pos = meta + blob.MetadataSize + uint64(size)
		r.Blobs++
	}
	r.Weights = int64(pos)
	m, err := ToSpec(pkg, func(v *mil.Value) (string, uint64, error) {
		off, ok := offsets[v]
		if !ok {
			return "", 0, fmt.Errorf("coreml: internal error: %s constant missing from the weight file", v.Type)
		}
		return mil.DefaultBlobFile, off, nil
	})
	if err != nil {
		return r, err
	}
	raw, err := spec.Marshal(m)
	if err != nil {
		return r, fmt.Errorf("coreml: %w", err)
	}
	r.Model = int64(len(raw))
	seed := sha256.Sum256(raw)
	mb, err := manifest.New(seed[:]).Marshal()
	if err != nil {
		return r, fmt.Errorf("coreml: %w", err)
	}
	r.Manifest = int64(len(mb))
	return r, nil
}
