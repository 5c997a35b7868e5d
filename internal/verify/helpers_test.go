package verify

import (
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/pipeline"
)

func openPkg(path string) (*coreml.Package, error) { return coreml.Open(path) }

func combineTo(ffn, pf *coreml.Package, dst string) error {
	defer ffn.Close()
	defer pf.Close()
	out, err := pipeline.CombinePackages(ffn, pf)
	if err != nil {
		return err
	}
	return coreml.Write(out, dst, coreml.WriteOptions{})
}
