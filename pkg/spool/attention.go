package spool

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Notice is something in the spool that needs the administrator.
type Notice struct {
	Problem string
	Fix     string
}

func (n Notice) String() string { return n.Problem + ": " + n.Fix }

// Attention lists what in the spool at root needs the administrator, for
// `relayd check-config` and `relayd doctor`: queued messages relayd will
// not send by itself (failed, or held by an operator or the policy),
// files in queue/quarantine/ (kept as found, never sent: damaged files,
// and refused maildrop messages with no one to tell) and maildrop
// files the daemon user o cannot read (relayd logs each and retries it at
// every scan). What this process may not read is skipped: run as root or
// as the daemon user to see everything.
func Attention(root string, o Owner) []Notice {
	var out []Notice
	if n, err := Counts(root); err == nil {
		if n[Failed] > 0 {
			out = append(out, Notice{
				Problem: fmt.Sprintf("%d message(s) failed for good and kept in the queue (bounces and delay notices that could not be delivered to their sender)", n[Failed]),
				Fix:     "relayd queue list shows each with its last reply; relayd queue release <id> tries it again, relayd queue delete <id> removes it",
			})
		}
		if n[Held] > 0 {
			out = append(out, Notice{
				Problem: fmt.Sprintf("%d message(s) held: relayd sends them only when released", n[Held]),
				Fix:     "relayd queue list --held shows why each is held; relayd queue release <id> (or --user <account>) sends them, relayd queue delete <id> removes them",
			})
		}
	}
	qdir := filepath.Join(root, DirQuarantine)
	if ents, err := os.ReadDir(qdir); err == nil && len(ents) > 0 {
		out = append(out, Notice{
			Problem: fmt.Sprintf("%d quarantined file(s) in %s: damaged or hostile files, or refused messages whose sender gets no bounce (empty, or NOTIFY without FAILURE), that relayd will never send", len(ents), qdir),
			Fix:     "relayd's event=quarantine log line for each says why (journalctl -u relayd | grep event=quarantine; a refused message's reason starts with \"rejected:\"); inspect them, then remove them",
		})
	}
	mdir := filepath.Join(root, DirMaildrop)
	ents, err := os.ReadDir(mdir)
	if err != nil {
		return out
	}
	var bad []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			continue
		}
		var st syscall.Stat_t
		if syscall.Lstat(filepath.Join(mdir, e.Name()), &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		readable := (int(st.Uid) == o.UID && st.Mode&0o400 != 0) ||
			(int(st.Gid) == o.DropGID && st.Mode&0o040 != 0) || st.Mode&0o004 != 0
		if !readable {
			bad = append(bad, e.Name())
		}
	}
	if len(bad) > 0 {
		group := strconv.Itoa(o.DropGID)
		if g, err := user.LookupGroupId(group); err == nil {
			group = g.Name
		}
		out = append(out, Notice{
			Problem: fmt.Sprintf("%d file(s) in %s that relayd cannot read (%s)", len(bad), mdir, strings.Join(bad, " ")),
			Fix: fmt.Sprintf("give them the maildrop's group (as root: chgrp %s %s/<file>; relayd picks them up at its next scan), and install sendmail setgid %s",
				group, mdir, group),
		})
	}
	return out
}
