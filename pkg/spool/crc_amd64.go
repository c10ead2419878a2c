package spool

import "sync"

// tripleBlock is the length of each of the three streams crc32cTriple
// checksums at once: 8 KB, so x^(8·tripleBlock) is x^(2^16).
const tripleBlock = 8 << 10

// shiftBlock is x^(8·tripleBlock) = x^(2^16) modulo the polynomial
// (bit-reversed; xpow2n(16), checked by TestShiftBlock): multiplying a
// CRC register by it appends tripleBlock zero bytes.
const shiftBlock = 0x28461564

// sse42 records whether the processor has the CRC32 instruction, asked on
// first use. A sync.Once, not sync.OnceValue: the latter allocates when
// the package is initialised, at every sendmail call.
var (
	sse42Once sync.Once
	sse42     bool
	tableOnce sync.Once
	table     *[256]uint32
)

// hasSSE42 reports whether the processor has the CRC32 instruction
// (CPUID leaf 1, ECX bit 20).
func hasSSE42() bool

// crc32cBytes returns the CRC register r (not inverted) after p.
//
//go:noescape
func crc32cBytes(r uint32, p []byte) uint32

// crc32cTriple returns the CRC registers a, b and c after the three
// consecutive blocks of tripleBlock bytes at p (p must hold 3·tripleBlock
// bytes).
//
//go:noescape
func crc32cTriple(a, b, c uint32, p *byte) (uint32, uint32, uint32)

func updateCRC(crc uint32, p []byte) uint32 {
	sse42Once.Do(func() { sse42 = hasSSE42() })
	if !sse42 {
		tableOnce.Do(func() { table = crcTable() })
		return updateTable(table, crc, p)
	}
	r := ^crc
	for len(p) >= 3*tripleBlock {
		a, b, c := crc32cTriple(r, 0, 0, &p[0])
		// The register after A, B, C is that of A shifted over B, plus
		// B's from zero, shifted over C, plus C's from zero.
		r = multmodp(shiftBlock, multmodp(shiftBlock, a)^b) ^ c
		p = p[3*tripleBlock:]
	}
	return ^crc32cBytes(r, p)
}
