package spool

import (
	"hash/crc32"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
)

func checksum(p []byte) uint32 {
	h := NewCRC()
	h.Write(p)
	return h.Sum32()
}

// NewCRC and hash/crc32's CRC-32C agree, whatever the sizes (around the
// three-stream blocks of the amd64 code too) and the split of the writes.
func TestCRC(t *testing.T) {
	tab := crc32.MakeTable(crc32.Castagnoli)
	r := rand.New(rand.NewPCG(1, 2))
	const block = 3 * 8 << 10
	for _, size := range []int{0, 1, 7, 8, 9, 100, 2048, block - 1, block, block + 1, 2*block + 13, 3*block - 8, 1 << 20, 1<<20 + 5} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		want := crc32.Checksum(data, tab)
		if got := checksum(data); got != want {
			t.Errorf("CRC of %d bytes = %08x, want %08x", size, got, want)
		}
		if got := updateTable(crcTable(), 0, data); got != want {
			t.Errorf("table CRC of %d bytes = %08x, want %08x", size, got, want)
		}
		for _, chunk := range []int{1, 1000, block - 3, block + 5, 64 << 10} {
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

// Multiplying a CRC register by x^(8n) is the same as running n zero
// bytes through it: the rule the three streams are joined by.
func TestMultmodp(t *testing.T) {
	tab := crcTable()
	for _, reg := range []uint32{1, 0xdeadbeef, 0xffffffff} {
		zeros := make([]byte, 8<<10) // x^(2^16): 2^16 zero bits
		want := ^updateTable(tab, ^reg, zeros)
		if got := multmodp(xpow2n(16), reg); got != want {
			t.Errorf("register %08x times x^(2^16) = %08x, over 8 KB of zeros %08x", reg, got, want)
		}
	}
}

func BenchmarkCRC(b *testing.B) {
	for _, size := range []int{2 << 10, 64 << 10} {
		data := make([]byte, size)
		b.Run(strconv.Itoa(size>>10)+"KB", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				checksum(data)
			}
		})
	}
}

// The three streams' constant is x^(2^16).
func TestShiftBlock(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("amd64 only")
	}
	if got := xpow2n(16); got != 0x28461564 {
		t.Errorf("x^(2^16) = %#08x, the amd64 code uses 0x28461564", got)
	}
}

// xpow2n returns x^(2^n) modulo the polynomial (bit-reversed), by
// squaring x n times: how the amd64 code's constant was computed.
func xpow2n(n int) uint32 {
	p := uint32(1) << 30 // x^1
	for ; n > 0; n-- {
		p = multmodp(p, p)
	}
	return p
}
