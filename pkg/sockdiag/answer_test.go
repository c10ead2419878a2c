package sockdiag

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlmsg is one netlink message as the kernel writes it (padded to 4).
func nlmsg(typ uint16, flags netlink.HeaderFlags, seq, port uint32, data []byte) []byte {
	l := nlHeaderLen + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint32(b[0:], uint32(l))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], uint16(flags))
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[12:], port)
	copy(b[nlHeaderLen:], data)
	return b
}

func errnoData(e unix.Errno) []byte {
	b := make([]byte, 4+nlHeaderLen)
	binary.NativeEndian.PutUint32(b, uint32(-int32(e)))
	return b
}

// An answer is taken only whole, for this request and port; the kernel's
// ENOENT is its own "no such socket"; a multipart answer goes on until
// NLMSG_DONE.
func TestParseAnswer(t *testing.T) {
	const seq, port = 7, 4242
	data := []byte("abcde") // an unaligned length: padded
	one := nlmsg(sockDiagByFamily, 0, seq, port, data)
	msgs, end, err := parseAnswer(nil, one, seq, port)
	if err != nil || !end || len(msgs) != 1 || string(msgs[0].Data) != "abcde" {
		t.Fatalf("one message: %v %v %v", msgs, end, err)
	}
	for name, b := range map[string][]byte{
		"another request": nlmsg(sockDiagByFamily, 0, seq+1, port, data),
		"another port":    nlmsg(sockDiagByFamily, 0, seq, port+1, data),
		"short header":    one[:nlHeaderLen-1],
		"length past end": one[:nlHeaderLen+2],
		"length under header": func() []byte {
			b := append([]byte(nil), one...)
			binary.NativeEndian.PutUint32(b, nlHeaderLen-1)
			return b
		}(),
		"short error": nlmsg(nlError, 0, seq, port, []byte{1, 2}),
		"good then another request": append(append([]byte(nil), one...),
			nlmsg(sockDiagByFamily, 0, seq+1, port, data)...),
	} {
		if msgs, _, err := parseAnswer(nil, b, seq, port); err == nil {
			t.Errorf("%s: accepted: %v", name, msgs)
		}
	}
	_, _, err = parseAnswer(nil, nlmsg(nlError, 0, seq, port, errnoData(unix.ENOENT)), seq, port)
	if !isKernelNoEnt(err) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("ENOENT answer: %v", err)
	}
	_, _, err = parseAnswer(nil, nlmsg(nlError, 0, seq, port, errnoData(unix.EPERM)), seq, port)
	if err == nil || isKernelNoEnt(err) {
		t.Errorf("EPERM answer: %v", err)
	}
	msgs, end, err = parseAnswer(nil, nlmsg(sockDiagByFamily, netlink.Multi, seq, port, data), seq, port)
	if err != nil || end || len(msgs) != 1 {
		t.Fatalf("first part: %v %v %v", msgs, end, err)
	}
	msgs, end, err = parseAnswer(msgs, append(nlmsg(sockDiagByFamily, netlink.Multi, seq, port, data), nlmsg(nlDone, netlink.Multi, seq, port, make([]byte, 4))...), seq, port)
	if err != nil || !end || len(msgs) != 2 {
		t.Fatalf("last part: %v %v %v", msgs, end, err)
	}
}
