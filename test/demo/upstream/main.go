// Command upstream is the demo's local smarthost: pkg/smtptest's in-process
// server (STARTTLS with a freshly generated CA and certificate, AUTH PLAIN
// and LOGIN) run as a program. It writes each received message to
// DIR/NNN.eml, with the envelope in DIR/NNN.env, and, once listening, the
// connection details to the -info file as shell assignments (HOST, PORT,
// CA_FILE). It stops on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

func main() {
	dir := flag.String("dir", "", "directory for received messages")
	user := flag.String("user", "demo", "AUTH user name")
	pwFile := flag.String("password-file", "", "file holding the AUTH password")
	info := flag.String("info", "", "file to write HOST, PORT and CA_FILE to once listening")
	flag.Parse()
	if *dir == "" || *pwFile == "" || *info == "" {
		fmt.Fprintln(os.Stderr, "usage: upstream -dir DIR -password-file FILE -info FILE [-user NAME]")
		os.Exit(64)
	}
	pw, err := os.ReadFile(*pwFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "upstream: %v\n", err)
		os.Exit(66)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "upstream: %v\n", err)
		os.Exit(73)
	}
	s, err := smtptest.Start(smtptest.Options{Username: *user, Password: strings.TrimRight(string(pw), "\n"), Domain: "upstream.demo.invalid"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "upstream: %v\n", err)
		os.Exit(69)
	}
	defer s.Close()
	ca := filepath.Join(*dir, "..", "upstream-ca.pem")
	if err := os.WriteFile(ca, s.CAPEM, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "upstream: %v\n", err)
		os.Exit(73)
	}
	tmp := *info + ".tmp"
	os.WriteFile(tmp, fmt.Appendf(nil, "HOST=%s\nPORT=%d\nCA_FILE=%s\n", s.Host, s.Port, ca), 0o644)
	os.Rename(tmp, *info)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	written := 0
	for {
		select {
		case <-sigs:
			return
		case <-tick.C:
		}
		msgs := s.Messages()
		for ; written < len(msgs); written++ {
			m := msgs[written]
			base := filepath.Join(*dir, fmt.Sprintf("%03d", written+1))
			env := fmt.Sprintf("queue_id=%s\nhelo=%s\nauth_user=%s\ntls=%v\nmail_from=%s\nrcpt_to=%s\n",
				m.QueueID, m.Helo, m.User, m.TLS, m.From, strings.Join(m.To, ","))
			os.WriteFile(base+".eml.tmp", m.Data, 0o644)
			os.WriteFile(base+".env", []byte(env), 0o644)
			os.Rename(base+".eml.tmp", base+".eml")
		}
	}
}
