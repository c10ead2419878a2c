package spool

import "sync"

// tripleBlock is the length of each of the three streams crc32cTriple
// checksums at once: 8 KB, so x^(8·tripleBlock) is x^(2^16).
const tripleBlock = 8 << 10

var (
	haveSSE42 = sync.OnceValue(hasSSE42)
	// shiftBlock is x^(8·tripleBlock): multiplying a CRC register by it
	// appends tripleBlock zero bytes.
	shiftBlock = sync.OnceValue(func() uint32 { return xpow2n(16) })
	table      = sync.OnceValue(crcTable)
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
	if !haveSSE42() {
		return updateTable(table(), crc, p)
	}
	r := ^crc
	if len(p) >= 3*tripleBlock {
		k := shiftBlock()
		for len(p) >= 3*tripleBlock {
			a, b, c := crc32cTriple(r, 0, 0, &p[0])
			// The register after A, B, C is that of A shifted over B,
			// plus B's from zero, shifted over C, plus C's from zero.
			r = multmodp(k, multmodp(k, a)^b) ^ c
			p = p[3*tripleBlock:]
		}
	}
	return ^crc32cBytes(r, p)
}
