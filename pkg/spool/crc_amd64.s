#include "textflag.h"

// func hasSSE42() bool
TEXT ·hasSSE42(SB), NOSPLIT, $0-1
	MOVL $1, AX
	XORL CX, CX
	CPUID
	SHRL $20, CX
	ANDL $1, CX
	MOVB CX, ret+0(FP)
	RET

// func crc32cBytes(r uint32, p []byte) uint32
TEXT ·crc32cBytes(SB), NOSPLIT, $0-36
	MOVL r+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	CMPQ CX, $8
	JB   tail

words:
	CRC32Q (SI), AX
	ADDQ $8, SI
	SUBQ $8, CX
	CMPQ CX, $8
	JAE  words

tail:
	TESTQ CX, CX
	JZ    done

bytes:
	CRC32B (SI), AX
	INCQ SI
	DECQ CX
	JNZ  bytes

done:
	MOVL AX, ret+32(FP)
	RET

// func crc32cTriple(a, b, c uint32, p *byte) (uint32, uint32, uint32)
TEXT ·crc32cTriple(SB), NOSPLIT, $0-36
	MOVL a+0(FP), AX
	MOVL b+4(FP), BX
	MOVL c+8(FP), DX
	MOVQ p+16(FP), SI
	LEAQ 8192(SI), DI
	LEAQ 16384(SI), R8
	MOVQ $1024, CX // tripleBlock / 8

loop:
	CRC32Q (SI), AX
	CRC32Q (DI), BX
	CRC32Q (R8), DX
	ADDQ $8, SI
	ADDQ $8, DI
	ADDQ $8, R8
	DECQ CX
	JNZ  loop

	MOVL AX, ret+24(FP)
	MOVL BX, ret1+28(FP)
	MOVL DX, ret2+32(FP)
	RET
