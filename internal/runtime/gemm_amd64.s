//go:build amd64 && !purego

#include "textflag.h"

// AVX2+FMA dot-product kernels for gemm.go (selected at run time when the
// CPU has AVX2 and FMA; see gemm_amd64.go).

// func rowNNSIMD(c, a, b *float32, n, k, ldb int)
//
// c[j] = Σ_{p<k} a[p]·b[p·ldb+j] for j < n, n a multiple of 8: one FMA
// chain per output in increasing p, starting from 0. Columns go in blocks
// of 32 (4 accumulators), then 8.
TEXT ·rowNNSIMD(SB), NOSPLIT, $0-48
	MOVQ c+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ k+32(FP), R8
	MOVQ ldb+40(FP), R9
	SHLQ $2, R9

block32:
	CMPQ CX, $32
	JLT  block8
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ DX, R10
	XORQ R11, R11

loop32:
	CMPQ R11, R8
	JGE  store32
	VBROADCASTSS (SI)(R11*4), Y8
	VFMADD231PS 0(R10), Y8, Y0
	VFMADD231PS 32(R10), Y8, Y1
	VFMADD231PS 64(R10), Y8, Y2
	VFMADD231PS 96(R10), Y8, Y3
	ADDQ R9, R10
	INCQ R11
	JMP  loop32

store32:
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $128, DI
	ADDQ $128, DX
	SUBQ $32, CX
	JMP  block32

block8:
	CMPQ CX, $8
	JLT  doneNN
	VXORPS Y0, Y0, Y0
	MOVQ DX, R10
	XORQ R11, R11

loop8:
	CMPQ R11, R8
	JGE  store8
	VBROADCASTSS (SI)(R11*4), Y8
	VFMADD231PS 0(R10), Y8, Y0
	ADDQ R9, R10
	INCQ R11
	JMP  loop8

store8:
	VMOVUPS Y0, 0(DI)
	ADDQ $32, DI
	ADDQ $32, DX
	SUBQ $8, CX
	JMP  block8

doneNN:
	VZEROUPPER
	RET

// func dot4x1HSIMD(a0, a1, a2, a3 *uint16, b *float32, k int, out *[4]float32)
//
// dot4x1SIMD with the a rows held as fp16 bits, widened exactly to fp32
// (F16C) before the FMAs: same lane order, so the same results as
// dot4x1SIMD on the widened rows.
TEXT ·dot4x1HSIMD(SB), NOSPLIT, $0-56
	MOVQ a0+0(FP), AX
	MOVQ a1+8(FP), BX
	MOVQ a2+16(FP), CX
	MOVQ a3+24(FP), DX
	MOVQ b+32(FP), SI
	MOVQ k+40(FP), R8
	MOVQ out+48(FP), R9
	XORQ R10, R10
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

loop41h:
	CMPQ R10, R8
	JGE  done41h
	VMOVUPS (SI)(R10*4), Y8
	VCVTPH2PS (AX)(R10*2), Y9
	VCVTPH2PS (BX)(R10*2), Y10
	VCVTPH2PS (CX)(R10*2), Y11
	VCVTPH2PS (DX)(R10*2), Y12
	VFMADD231PS Y9, Y8, Y0
	VFMADD231PS Y10, Y8, Y1
	VFMADD231PS Y11, Y8, Y2
	VFMADD231PS Y12, Y8, Y3
	ADDQ $8, R10
	JMP  loop41h

done41h:
	VEXTRACTF128 $1, Y0, X8
	VADDPS X8, X0, X0
	VEXTRACTF128 $1, Y1, X8
	VADDPS X8, X1, X1
	VEXTRACTF128 $1, Y2, X8
	VADDPS X8, X2, X2
	VEXTRACTF128 $1, Y3, X8
	VADDPS X8, X3, X3
	VHADDPS X1, X0, X0
	VHADDPS X3, X2, X2
	VHADDPS X2, X0, X0
	VMOVUPS X0, 0(R9)
	VZEROUPPER
	RET

// func halfToFloatSIMD(dst *float32, src *uint16, n int)
//
// dst[i] = src[i] widened from fp16 to fp32 (exact) for i < n, n a
// multiple of 8.
TEXT ·halfToFloatSIMD(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	XORQ R10, R10

looph:
	CMPQ R10, CX
	JGE  doneh
	VCVTPH2PS (SI)(R10*2), Y0
	VMOVUPS Y0, (DI)(R10*4)
	ADDQ $8, R10
	JMP  looph

doneh:
	VZEROUPPER
	RET

// func lut4ToFloatSIMD(dst *float32, src *byte, n int, tab *[32]byte)
//
// dst[i] = palette[idx[i]] for i < n, n a multiple of 16, where idx[2j]
// and idx[2j+1] are the low and high nibbles of src[j] and the palette
// holds 16 fp16 values as their low bytes (tab[0:16]) and high bytes
// (tab[16:32]). Each group of 16: split the nibbles and interleave them
// in element order, look both bytes up with PSHUFB, interleave them into
// halves and widen (exact).
TEXT ·lut4ToFloatSIMD(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ tab+24(FP), AX
	VMOVDQU (AX), X6
	VMOVDQU 16(AX), X7
	MOVQ $0x0f0f0f0f0f0f0f0f, BX
	MOVQ BX, X5
	VPBROADCASTQ X5, X5

loopl:
	CMPQ CX, $16
	JL   donel
	VMOVQ (SI), X0
	VPSRLW $4, X0, X1
	VPAND X5, X0, X0
	VPAND X5, X1, X1
	VPUNPCKLBW X1, X0, X0
	VPSHUFB X0, X6, X2
	VPSHUFB X0, X7, X3
	VPUNPCKLBW X3, X2, X4
	VPUNPCKHBW X3, X2, X2
	VCVTPH2PS X4, Y4
	VCVTPH2PS X2, Y2
	VMOVUPS Y4, (DI)
	VMOVUPS Y2, 32(DI)
	ADDQ $8, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  loopl

donel:
	VZEROUPPER
	RET

// func lut6ToFloatSIMD(dst *float32, src *byte, n int, tab *[128]byte, k *[80]byte)
//
// dst[i] = palette[idx[i]] for i < n, n a multiple of 16, where the 6-bit
// indices are packed LSB-first (four in every three bytes of src; src must
// have 4 readable bytes past the n·6/8 it decodes) and the palette holds
// 64 fp16 values as 4×16 low bytes (tab[0:64]) then 4×16 high bytes
// (tab[64:128]). k holds the PSHUFB pattern that spreads 12 bytes into
// four dwords, then the dword masks 0x3f, 0x3f00, 0x3f0000, 0x3f000000.
// Per 16 indices: spread, gather each index's six bits into its own byte
// (in element order), look up each byte of the fp16 value in the four
// 16-entry sub-tables (PSHUFB on the low four bits) and pick the sub-table
// with bits 4 and 5 (PBLENDVB), interleave the bytes into halves and
// widen (exact).
TEXT ·lut6ToFloatSIMD(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ tab+24(FP), AX
	MOVQ k+32(FP), BX
	VMOVDQU 0(AX), X8
	VMOVDQU 16(AX), X9
	VMOVDQU 32(AX), X10
	VMOVDQU 48(AX), X11
	VMOVDQU 64(AX), X12
	VMOVDQU 80(AX), X13
	VMOVDQU 96(AX), X14
	VMOVDQU 112(AX), X15

loop6:
	CMPQ CX, $16
	JL   done6
	VMOVDQU (SI), X0
	VPSHUFB 0(BX), X0, X0
	VPAND   16(BX), X0, X2
	VPSLLD  $2, X0, X1
	VPAND   32(BX), X1, X1
	VPOR    X1, X2, X2
	VPSLLD  $4, X0, X1
	VPAND   48(BX), X1, X1
	VPOR    X1, X2, X2
	VPSLLD  $6, X0, X1
	VPAND   64(BX), X1, X1
	VPOR    X1, X2, X0
	VPSLLW  $3, X0, X3
	VPSLLW  $2, X0, X4

	VPSHUFB   X0, X8, X5
	VPSHUFB   X0, X9, X6
	VPBLENDVB X3, X6, X5, X5
	VPSHUFB   X0, X10, X6
	VPSHUFB   X0, X11, X7
	VPBLENDVB X3, X7, X6, X6
	VPBLENDVB X4, X6, X5, X5

	VPSHUFB   X0, X12, X6
	VPSHUFB   X0, X13, X7
	VPBLENDVB X3, X7, X6, X6
	VPSHUFB   X0, X14, X7
	VPSHUFB   X0, X15, X1
	VPBLENDVB X3, X1, X7, X7
	VPBLENDVB X4, X7, X6, X6

	VPUNPCKLBW X6, X5, X7
	VPUNPCKHBW X6, X5, X5
	VCVTPH2PS  X7, Y7
	VCVTPH2PS  X5, Y5
	VMOVUPS    Y7, (DI)
	VMOVUPS    Y5, 32(DI)
	ADDQ $12, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  loop6

done6:
	VZEROUPPER
	RET

// func dot4x1L4SIMD(a0, a1, a2, a3 *byte, b *float32, k int, out *[4]float32, tab *[32]byte)
//
// dot4x1HSIMD with the a rows held as 4-bit LUT indices (two per byte, low
// nibble first) into one 16-entry fp16 palette (tab: 16 low bytes, then
// 16 high bytes): each row's 8 halves per step are looked up as in
// lut4ToFloatSIMD, then widened and accumulated in dot4x1SIMD's lane
// order, so the results are those of dot4x1SIMD on the widened rows.
TEXT ·dot4x1L4SIMD(SB), NOSPLIT, $0-64
	MOVQ a0+0(FP), AX
	MOVQ a1+8(FP), BX
	MOVQ a2+16(FP), CX
	MOVQ a3+24(FP), DX
	MOVQ b+32(FP), SI
	MOVQ k+40(FP), R8
	MOVQ out+48(FP), R9
	MOVQ tab+56(FP), R12
	VMOVDQU (R12), X13
	VMOVDQU 16(R12), X14
	MOVQ $0x0f0f0f0f0f0f0f0f, R12
	MOVQ R12, X15
	VPBROADCASTQ X15, X15
	XORQ R10, R10
	XORQ R11, R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

loop41l16:
	LEAQ 16(R10), R13
	CMPQ R13, R8
	JGT  loop41l
	VMOVUPS (SI)(R10*4), Y8

	VMOVQ (AX)(R11*1), X9
	VPSRLW $4, X9, X4
	VPAND X15, X9, X9
	VPAND X15, X4, X4
	VPUNPCKLBW X4, X9, X9
	VPSHUFB X9, X13, X4
	VPSHUFB X9, X14, X9
	VPUNPCKHBW X9, X4, X10
	VPUNPCKLBW X9, X4, X9
	VCVTPH2PS X9, Y9
	VCVTPH2PS X10, Y10
	VMOVQ (BX)(R11*1), X11
	VPSRLW $4, X11, X5
	VPAND X15, X11, X11
	VPAND X15, X5, X5
	VPUNPCKLBW X5, X11, X11
	VPSHUFB X11, X13, X5
	VPSHUFB X11, X14, X11
	VPUNPCKHBW X11, X5, X12
	VPUNPCKLBW X11, X5, X11
	VCVTPH2PS X11, Y11
	VCVTPH2PS X12, Y12
	VMOVUPS 32(SI)(R10*4), Y6
	VFMADD231PS Y9, Y8, Y0
	VFMADD231PS Y10, Y6, Y0
	VFMADD231PS Y11, Y8, Y1
	VFMADD231PS Y12, Y6, Y1
	VMOVQ (CX)(R11*1), X9
	VPSRLW $4, X9, X4
	VPAND X15, X9, X9
	VPAND X15, X4, X4
	VPUNPCKLBW X4, X9, X9
	VPSHUFB X9, X13, X4
	VPSHUFB X9, X14, X9
	VPUNPCKHBW X9, X4, X10
	VPUNPCKLBW X9, X4, X9
	VCVTPH2PS X9, Y9
	VCVTPH2PS X10, Y10
	VMOVQ (DX)(R11*1), X11
	VPSRLW $4, X11, X5
	VPAND X15, X11, X11
	VPAND X15, X5, X5
	VPUNPCKLBW X5, X11, X11
	VPSHUFB X11, X13, X5
	VPSHUFB X11, X14, X11
	VPUNPCKHBW X11, X5, X12
	VPUNPCKLBW X11, X5, X11
	VCVTPH2PS X11, Y11
	VCVTPH2PS X12, Y12
	VFMADD231PS Y9, Y8, Y2
	VFMADD231PS Y10, Y6, Y2
	VFMADD231PS Y11, Y8, Y3
	VFMADD231PS Y12, Y6, Y3
	ADDQ $16, R10
	ADDQ $8, R11
	JMP  loop41l16

loop41l:
	CMPQ R10, R8
	JGE  done41l
	VMOVUPS (SI)(R10*4), Y8

	VMOVD (AX)(R11*1), X9
	VPSRLW $4, X9, X4
	VPAND X15, X9, X9
	VPAND X15, X4, X4
	VPUNPCKLBW X4, X9, X9
	VPSHUFB X9, X13, X4
	VPSHUFB X9, X14, X9
	VPUNPCKLBW X9, X4, X9
	VCVTPH2PS X9, Y9

	VMOVD (BX)(R11*1), X10
	VPSRLW $4, X10, X5
	VPAND X15, X10, X10
	VPAND X15, X5, X5
	VPUNPCKLBW X5, X10, X10
	VPSHUFB X10, X13, X5
	VPSHUFB X10, X14, X10
	VPUNPCKLBW X10, X5, X10
	VCVTPH2PS X10, Y10

	VMOVD (CX)(R11*1), X11
	VPSRLW $4, X11, X6
	VPAND X15, X11, X11
	VPAND X15, X6, X6
	VPUNPCKLBW X6, X11, X11
	VPSHUFB X11, X13, X6
	VPSHUFB X11, X14, X11
	VPUNPCKLBW X11, X6, X11
	VCVTPH2PS X11, Y11

	VMOVD (DX)(R11*1), X12
	VPSRLW $4, X12, X7
	VPAND X15, X12, X12
	VPAND X15, X7, X7
	VPUNPCKLBW X7, X12, X12
	VPSHUFB X12, X13, X7
	VPSHUFB X12, X14, X12
	VPUNPCKLBW X12, X7, X12
	VCVTPH2PS X12, Y12

	VFMADD231PS Y9, Y8, Y0
	VFMADD231PS Y10, Y8, Y1
	VFMADD231PS Y11, Y8, Y2
	VFMADD231PS Y12, Y8, Y3
	ADDQ $8, R10
	ADDQ $4, R11
	JMP  loop41l

done41l:
	VEXTRACTF128 $1, Y0, X8
	VADDPS X8, X0, X0
	VEXTRACTF128 $1, Y1, X8
	VADDPS X8, X1, X1
	VEXTRACTF128 $1, Y2, X8
	VADDPS X8, X2, X2
	VEXTRACTF128 $1, Y3, X8
	VADDPS X8, X3, X3
	VHADDPS X1, X0, X0
	VHADDPS X3, X2, X2
	VHADDPS X2, X0, X0
	VMOVUPS X0, 0(R9)
	VZEROUPPER
	RET

// func lut6DotRowSIMD(a *byte, b *float32, n int, tab *[128]byte, k *[80]byte, acc *[8]float32)
//
// acc[l] = Σ a[p]·b[p] over p < n with p%8 == l, accumulated with one FMA
// per 8 elements in increasing p (dot4x1SIMD's lanes for one row), for n
// a multiple of 8, where a[p] are 6-bit LUT indices (packed as
// lut6ToFloatSIMD reads them; 16 bytes must be readable from each
// 12-byte step) looked up in tab as lut6ToFloatSIMD does.
TEXT ·lut6DotRowSIMD(SB), NOSPLIT, $0-48
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	MOVQ tab+24(FP), AX
	MOVQ k+32(FP), BX
	MOVQ acc+40(FP), DX
	VMOVDQU 0(AX), X8
	VMOVDQU 16(AX), X9
	VMOVDQU 32(AX), X10
	VMOVDQU 48(AX), X11
	VMOVDQU 64(AX), X12
	VMOVDQU 80(AX), X13
	VMOVDQU 96(AX), X14
	VMOVDQU 112(AX), X15
	VXORPS Y6, Y6, Y6

loopd6:
	CMPQ CX, $8
	JL   doned6
	VMOVDQU (SI), X0
	VPSHUFB 0(BX), X0, X0
	VPAND   16(BX), X0, X2
	VPSLLD  $2, X0, X1
	VPAND   32(BX), X1, X1
	VPOR    X1, X2, X2
	VPSLLD  $4, X0, X1
	VPAND   48(BX), X1, X1
	VPOR    X1, X2, X2
	VPSLLD  $6, X0, X1
	VPAND   64(BX), X1, X1
	VPOR    X1, X2, X0
	VPSLLW  $3, X0, X3
	VPSLLW  $2, X0, X4

	VPSHUFB   X0, X8, X5
	VPSHUFB   X0, X9, X2
	VPBLENDVB X3, X2, X5, X5
	VPSHUFB   X0, X10, X2
	VPSHUFB   X0, X11, X7
	VPBLENDVB X3, X7, X2, X2
	VPBLENDVB X4, X2, X5, X5

	VPSHUFB   X0, X12, X2
	VPSHUFB   X0, X13, X7
	VPBLENDVB X3, X7, X2, X2
	VPSHUFB   X0, X14, X7
	VPSHUFB   X0, X15, X1
	VPBLENDVB X3, X1, X7, X7
	VPBLENDVB X4, X7, X2, X2

	VPUNPCKLBW X2, X5, X7
	VCVTPH2PS  X7, Y7
	VFMADD231PS (DI), Y7, Y6
	CMPQ CX, $16
	JL   doned6
	VPUNPCKHBW X2, X5, X5
	VCVTPH2PS  X5, Y5
	VFMADD231PS 32(DI), Y5, Y6
	ADDQ $12, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  loopd6

doned6:
	VMOVUPS Y6, (DX)
	VZEROUPPER
	RET
