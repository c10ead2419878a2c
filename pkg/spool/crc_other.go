//go:build !amd64

package spool

import (
	"hash/crc32"
	"sync"
)

var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

func updateCRC(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli(), p) }
