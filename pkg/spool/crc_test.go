package spool

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func checksum(p []byte) uint32 {
	h := NewCRC()
	h.Write(p)
	return h.Sum32()
}

// The small table and hash/crc32 agree, whatever the sizes and the split
// of the writes around crcSmall.
func TestCRC(t *testing.T) {
	tab := crc32.MakeTable(crc32.Castagnoli)
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 7, 100, crcSmall - 1, crcSmall, crcSmall + 1, 3*crcSmall + 5, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		want := crc32.Checksum(data, tab)
		if got := checksum(data); got != want {
			t.Errorf("CRC of %d bytes = %08x, want %08x", size, got, want)
		}
		for _, chunk := range []int{1, 1000, crcSmall - 3, 64 << 10} {
			h := NewCRC()
			for p := data; len(p) > 0; {
				n := min(chunk, len(p))
				h.Write(p[:n])
				p = p[n:]
			}
			if h.Sum32() != want {
				t.Errorf("%d bytes in writes of %d: %08x, want %08x", size, chunk, h.Sum32(), want)
			}
			if b := h.Sum(nil); len(b) != 4 || uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]) != want {
				t.Errorf("Sum = %x", b)
			}
		}
	}
}
