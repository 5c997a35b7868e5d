package decoder

import "github.com/anemll/anemll/internal/fp16"

func halfToFloat(h uint16) float32 { return fp16.ToFloat32(fp16.Bits(h)) }
func floatToHalf(f float32) uint16 { return uint16(fp16.FromFloat32(f)) }
