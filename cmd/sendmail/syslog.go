package main

import (
	"fmt"
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
// best effort: logging never makes sendmail fail, and it never blocks. log/syslog is not used: it would add its dial logic and
// fallbacks to the setgid binary for one datagram.
func syslogf(format string, a ...any) {
	const pri = 2*8 + 4 // LOG_MAIL | LOG_WARNING
	msg := fmt.Sprintf(format, a...)
	line := fmt.Sprintf("<%d>%s sendmail[%d]: uid=%s %s", pri, time.Now().UTC().Format(time.Stamp), os.Getpid(), strconv.Itoa(unix.Getuid()), msg)
	if len(line) > 2048 {
		line = line[:2048]
	}
	// Raw system calls, not package net: a dial or a deadline starts the
	// runtime's network poller, and when the caller's RLIMIT_NOFILE leaves
	// no descriptor for its epoll instance, the runtime dies with exit 2
	// instead of this line being dropped. MSG_DONTWAIT: a full
	// log socket drops the line, never blocks.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	unix.Sendto(fd, []byte(line), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, &unix.SockaddrUnix{Name: syslogPath})
}
