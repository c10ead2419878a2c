package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// sendLoop sends one message per connection to addr until stop is
// closed, with Subject "<tag> <n>", and reports each subject answered 250
// on ok and each whose DATA was sent but not answered (cut off) on cut.
func sendLoop(addr, tag string, stop <-chan struct{}, ok, cut func(string)) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		reply := func() string {
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return "EOF"
				}
				if len(l) < 4 || l[3] != '-' {
					return l
				}
			}
		}
		subject := fmt.Sprintf("%s %d", tag, n)
		good := strings.HasPrefix(reply(), "220")
		for _, cmd := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<rcpt@example.net>", "DATA"} {
			if !good {
				break
			}
			fmt.Fprintf(c, "%s\r\n", cmd)
			r := reply()
			good = strings.HasPrefix(r, "250") || strings.HasPrefix(r, "354")
		}
		if !good {
			c.Close()
			return
		}
		fmt.Fprintf(c, "Subject: %s\r\n\r\nbody of %s\r\n.\r\n", subject, subject)
		r := reply()
		c.Close()
		if strings.HasPrefix(r, "250 ") {
			ok(subject)
		} else {
			cut(subject)
			return
		}
	}
}

// relayd killed (SIGKILL) while eight clients keep sending — sessions
// writing their message, waiting for the group commit, or being answered
// — loses nothing that got a 250: after the restart every such message
// is delivered.
func TestListenKilledDuringGroupCommit(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	addr := s.listenAddrs()["tcp4"]
	var mu sync.Mutex
	accepted := map[string]bool{}
	cutOff := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendLoop(addr, fmt.Sprintf("client%d", i), stop,
				func(subj string) { mu.Lock(); accepted[subj] = true; mu.Unlock() },
				func(string) { mu.Lock(); cutOff++; mu.Unlock() })
		}()
	}
	waitfor.True(t, "messages accepted", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted) >= 100
	})
	d.kill()
	close(stop)
	wg.Wait()
	mu.Lock()
	n := len(accepted)
	mu.Unlock()
	t.Logf("%d messages answered 250 before the kill, %d sessions cut off", n, cutOff)
	s.start()
	waitfor.True(t, "every accepted message delivered after the restart", 60*time.Second, func() bool {
		got := s.subjects()
		for subj := range accepted {
			if got[subj] == 0 {
				return false
			}
		}
		return true
	})
}
