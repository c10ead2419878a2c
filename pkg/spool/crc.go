package spool

import (
	"hash"
	"hash/crc32"
	"sync"
)

// The checksum of the message bytes is CRC-32C (Castagnoli).
//
// hash/crc32 builds its Castagnoli tables on first use, and on amd64 that
// includes the tables of its SSE4.2 code for long inputs: about 0.15 ms,
// which a sendmail storing a 2 KB message would pay at every call (it was
// a package-level table, built at start-up even by the modes that never
// checksum anything). So the first crcSmall bytes of a message go through
// a 1 KB table built on first use (a few microseconds), and only a message
// longer than that pays for hash/crc32's fast code. Both compute the same
// CRC, so a message may switch from one to the other mid-way.

// crcSmall is the number of bytes below which the small table is used.
const crcSmall = 16 << 10

var (
	smallTable = sync.OnceValue(func() *[256]uint32 {
		var t [256]uint32
		for i := range t {
			crc := uint32(i)
			for j := 0; j < 8; j++ {
				if crc&1 == 1 {
					crc = crc>>1 ^ crc32.Castagnoli
				} else {
					crc >>= 1
				}
			}
			t[i] = crc
		}
		return &t
	})
	castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })
)

// crc32c is a hash.Hash32 of CRC-32C.
type crc32c struct {
	crc uint32
	n   int64
}

// NewCRC returns a hash of the message bytes, as stored in a spool file's
// crc32c field.
func NewCRC() hash.Hash32 { return new(crc32c) }

func (c *crc32c) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) <= crcSmall {
		t := smallTable()
		crc := ^c.crc
		for _, b := range p {
			crc = t[byte(crc)^b] ^ crc>>8
		}
		c.crc = ^crc
	} else {
		c.crc = crc32.Update(c.crc, castagnoli(), p)
	}
	c.n += int64(len(p))
	return len(p), nil
}

func (c *crc32c) Sum32() uint32 { return c.crc }

func (c *crc32c) Sum(b []byte) []byte {
	s := c.crc
	return append(b, byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}

func (c *crc32c) Reset()         { *c = crc32c{} }
func (c *crc32c) Size() int      { return crc32.Size }
func (c *crc32c) BlockSize() int { return 1 }
