package spool

import "hash"

// The checksum of the message bytes is CRC-32C (Castagnoli).
//
// hash/crc32 builds its Castagnoli tables on first use, and on amd64 that
// includes the tables of its SSE4.2 code for long inputs: about 0.15 ms
// (measured: more than the checksum of a whole 1 MB message), which every
// sendmail call storing a message would pay. On amd64 with SSE4.2 (every
// x86-64 processor since 2008) the checksum is computed here with the
// processor's CRC32 instruction and no table at all (crc_amd64.s): three
// independent streams over consecutive blocks, combined by
// multiplication modulo the polynomial (multmodp), which keeps the
// instruction's pipeline full. Elsewhere a table of 1 KB, built on first
// use (a few microseconds), or hash/crc32 on other architectures
// (crc_other.go). All compute the same CRC.

// castagnoliPoly is the CRC-32C polynomial, bit-reversed (hash/crc32's
// crc32.Castagnoli).
const castagnoliPoly = 0x82f63b78

// crc32c is a hash.Hash32 of CRC-32C.
type crc32c struct {
	crc uint32
}

// NewCRC returns a hash of the message bytes, as stored in a spool file's
// crc32c field.
func NewCRC() hash.Hash32 { return new(crc32c) }

func (c *crc32c) Write(p []byte) (int, error) {
	c.crc = updateCRC(c.crc, p)
	return len(p), nil
}

func (c *crc32c) Sum32() uint32 { return c.crc }

func (c *crc32c) Sum(b []byte) []byte {
	s := c.crc
	return append(b, byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}

func (c *crc32c) Reset()         { *c = crc32c{} }
func (c *crc32c) Size() int      { return 4 }
func (c *crc32c) BlockSize() int { return 1 }

// crcTable is the byte-at-a-time table of CRC-32C.
func crcTable() *[256]uint32 {
	var t [256]uint32
	for i := range t {
		crc := uint32(i)
		for j := 0; j < 8; j++ {
			if crc&1 == 1 {
				crc = crc>>1 ^ castagnoliPoly
			} else {
				crc >>= 1
			}
		}
		t[i] = crc
	}
	return &t
}

// updateTable is the CRC of p after crc, by table t.
func updateTable(t *[256]uint32, crc uint32, p []byte) uint32 {
	r := ^crc
	for _, b := range p {
		r = t[byte(r)^b] ^ r>>8
	}
	return ^r
}

// multmodp returns a·b modulo the polynomial, both (and the result) in
// the bit-reversed representation of the CRC register, in which x^0 is
// 1<<31. Multiplying a CRC register by x^(8n) is what n zero bytes do to
// it: the shift that joins the CRC of one block to the next.
func multmodp(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		if b&1 != 0 {
			b = b>>1 ^ castagnoliPoly
		} else {
			b >>= 1
		}
	}
	return p
}
