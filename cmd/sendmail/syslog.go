package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// syslogPath is the system log socket. Tests set it at link time (-X
// main.syslogPath=...) to read what sendmail logs; release builds never do.
var syslogPath = "/dev/log"

// syslogf sends one line to the system log (/dev/log, RFC 3164 format,
// facility mail, severity warning), prefixed with the caller's uid. It is
// best effort: logging never makes sendmail fail, and it never blocks for
// long. log/syslog is not used: it would add its dial logic and
// fallbacks to the setgid binary for one datagram.
func syslogf(format string, a ...any) {
	const pri = 2*8 + 4 // LOG_MAIL | LOG_WARNING
	msg := fmt.Sprintf(format, a...)
	line := fmt.Sprintf("<%d>%s sendmail[%d]: uid=%s %s", pri, time.Now().UTC().Format(time.Stamp), os.Getpid(), strconv.Itoa(unix.Getuid()), msg)
	if len(line) > 2048 {
		line = line[:2048]
	}
	c, err := net.DialTimeout("unixgram", syslogPath, 100*time.Millisecond)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write([]byte(line))
}
