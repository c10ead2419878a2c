package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submitsock"
)

// SendOptions are the settings of the test message.
type SendOptions struct {
	Config *config.Config
	To     string
	From   string // "" : the sender relayd gives root's mail
	// Wait bounds the wait for the outcome.
	Wait time.Duration
	// Log, when not nil, returns relayd's log lines for a queue id (to
	// find the upstream's queue id); nil: journalctl -u relayd.
	Log func(ctx context.Context, id string) string
}

// SendTest stores one test message through relayd's submission socket —
// the door sendmail uses when it is not setgid, stored like any other
// message — and follows it through the queue with the control socket until
// it leaves it (delivered), fails, or Wait passes. The upstream's queue id
// comes from relayd's delivery log line.
func SendTest(ctx context.Context, o SendOptions) *Sent {
	if o.Wait <= 0 {
		o.Wait = 2 * time.Minute
	}
	s := &Sent{To: o.To}
	host := o.Config.Hostname
	now := time.Now()
	body := fmt.Sprintf("From: %s\nTo: <%s>\nSubject: mailshim test message from relayd doctor on %s\nDate: %s\n\n"+
		"This is a test message sent by `relayd doctor --send-to` on %s\nto check that mail from this host reaches its recipients.\n",
		fromHeader(o.From, host), o.To, host, now.Format(time.RFC1123Z), host)
	m := &spool.Meta{ID: spool.NewID(now), Time: now, Env: spool.Envelope{Sender: o.From, Recipients: []string{o.To}}}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	id, err := submitsock.Send(sctx, o.Config.SubmitSocket, m, strings.NewReader(body))
	cancel()
	if err != nil {
		s.Status, s.Reply = "not-stored", "submission socket "+o.Config.SubmitSocket+": "+err.Error()
		return s
	}
	s.ID = id
	deadline := time.Now().Add(o.Wait)
	for {
		var out bytes.Buffer
		err := control.Request(o.Config.ControlSocket, control.VerbShow, []string{id}, &out)
		if err != nil && !errors.Is(err, control.ErrUnavailable) && !errors.Is(err, control.ErrDenied) {
			// No such message: it left the queue, delivered.
			s.Status = "delivered"
			break
		}
		f := showFields(out.String())
		s.Upstream, s.Reply = f["upstream"], f["last reply"]
		if f["state"] == "failed" {
			s.Status = "failed"
			break
		}
		if f["state"] == "deferred" && f["attempts"] != "" && f["attempts"] != "0" {
			// The first attempt is over and did not deliver: that is the
			// answer (the queue retries it later).
			s.Status = "deferred"
			return s
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Status = "timeout (still " + f["state"] + ")"
			return s
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	logf := o.Log
	if logf == nil {
		logf = journal
	}
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	defer lcancel()
	for _, l := range strings.Split(logf(lctx, id), "\n") {
		if !strings.Contains(l, "id="+id) || !strings.Contains(l, "delivery") {
			continue
		}
		if m := upstreamID.FindStringSubmatch(l); m != nil {
			s.QueueID = m[1]
		}
		if m := upstreamKV.FindStringSubmatch(l); m != nil {
			s.Upstream = m[1]
		}
		if m := replyKV.FindStringSubmatch(l); m != nil {
			s.Reply = m[1]
		}
	}
	if s.QueueID == "" && s.Status == "delivered" {
		s.Reply = "the upstream's queue id is in relayd's log: the delivery line with id=" + id
	}
	return s
}

var (
	upstreamID = regexp.MustCompile(`upstream_id=([^ ]+)`)
	upstreamKV = regexp.MustCompile(`upstream=([^ ]+)`)
	replyKV    = regexp.MustCompile(`reply="((?:[^"\\]|\\.)*)"`)
)

func fromHeader(from, host string) string {
	if from == "" {
		return "root@" + host
	}
	return from
}

func showFields(s string) map[string]string {
	f := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			f[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return f
}

// journal reads relayd's log lines about id from the journal.
func journal(ctx context.Context, id string) string {
	out, err := exec.CommandContext(ctx, "journalctl", "-u", "relayd", "-o", "cat", "--no-pager", "--since", "-1h", "-g", "id="+id).Output()
	if err != nil {
		return ""
	}
	return string(out)
}
