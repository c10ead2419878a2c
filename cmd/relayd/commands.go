package main

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// loadConfig loads path with its secrets, printing every error on stderr.
func loadConfig(path string) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		printConfigErr(err)
		return nil, false
	}
	if err := cfg.LoadSecrets(); err != nil {
		printConfigErr(err)
		return nil, false
	}
	return cfg, true
}

func printConfigErr(err error) {
	if es := config.Errors(err); len(es) > 0 {
		for _, e := range es {
			fmt.Fprintf(stderr, "relayd: %s\n", e)
		}
		return
	}
	fmt.Fprintf(stderr, "relayd: %v\n", err)
}

// daemonUser reports whether uid is relayd's user for spool: the
// mailshim user, or the owner of the spool (a private instance's).
func daemonUser(uid int, spool string) bool {
	if u, err := user.Lookup("mailshim"); err == nil && u.Uid == strconv.Itoa(uid) {
		return true
	}
	var st syscall.Stat_t
	return syscall.Stat(spool, &st) == nil && int(st.Uid) == uid
}

// checkOwner is who the spool should belong to for check-config: the
// current user, or — run as root against a spool that is (or will be)
// the mailshim user's — that user.
func checkOwner(root string) spool.Owner {
	o := spool.CurrentOwner()
	if os.Getuid() != 0 {
		return o
	}
	u, err := user.Lookup("mailshim")
	if err != nil {
		return o
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if fi, err := os.Stat(filepath.Join(root, spool.DirQueue)); err == nil && int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
		return o
	}
	mo := spool.Owner{UID: uid, GID: gid, DropGID: gid}
	if g, err := user.LookupGroup(spool.DropGroup); err == nil {
		mo.DropGID, _ = strconv.Atoi(g.Gid)
	}
	return mo
}

// checkDaemonFiles is check-config's check, when root checks for the
// daemon user's existing spool (owner, from checkOwner), that relayd as
// that user can read the files root just read (config.CheckFilesFor).
func checkDaemonFiles(cfg *config.Config, owner spool.Owner) error {
	fi, err := os.Stat(cfg.Spool)
	if err != nil || owner.UID == os.Getuid() || int(fi.Sys().(*syscall.Stat_t).Uid) != owner.UID {
		return nil
	}
	name, gids := strconv.Itoa(owner.UID), []int{owner.GID, owner.DropGID} // the unit's Group= and SupplementaryGroups=
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if n, err := strconv.Atoi(id); err == nil {
					gids = append(gids, n)
				}
			}
		}
	}
	return cfg.CheckFilesFor(owner.UID, gids, name)
}

// checkConfig validates the configuration, its secrets and the spool, and
// prints the effective configuration with secrets redacted.
func checkConfig(path string) int {
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.LoadSecrets()
	}
	if err != nil {
		printConfigErr(err)
		if euid := os.Geteuid(); euid != 0 && cfg != nil && !daemonUser(euid, cfg.Spool) && errors.Is(err, fs.ErrPermission) {
			// Secrets are readable by relayd's user only, as they should
			// be: not a reason to loosen them.
			fmt.Fprintf(stderr, "relayd: hint: uid %d may not read relayd's files, as it should be: run sudo relayd check-config (or as relayd's user); do not make them readable by others\n", euid)
		}
		return sysexits.Config
	}
	owner := checkOwner(cfg.Spool)
	bad := false
	if err := checkDaemonFiles(cfg, owner); err != nil {
		printConfigErr(err)
		bad = true
	}
	if err := spool.Check(cfg.Spool, owner); err != nil {
		var le *spool.LayoutError
		for _, e := range unjoin(err) {
			if errors.As(e, &le) {
				fmt.Fprintf(os.Stderr, "relayd: %s\n", le)
			} else {
				fmt.Fprintf(os.Stderr, "relayd: %v\n", e)
			}
		}
		return sysexits.Config
	}
	if bad {
		return sysexits.Config
	}
	for _, e := range cfg.LoadAliases() {
		fmt.Fprintf(os.Stderr, "relayd: warning: %v\n", e)
	}
	for _, n := range spool.Attention(cfg.Spool, owner) {
		fmt.Fprintf(os.Stderr, "relayd: warning: %s\n", n)
	}
	for _, w := range listenWarnings(cfg) {
		fmt.Fprintf(os.Stderr, "relayd: warning: %s\n", w)
	}
	for _, w := range policyWarnings(cfg) {
		fmt.Fprintf(os.Stderr, "relayd: warning: %s\n", w)
	}
	fmt.Print(cfg.Redacted())
	return sysexits.OK
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// queueCmd sends a queue command to the running relayd.
func queueCmd(path string, args []string) int {
	if len(args) == 0 {
		return usageError("queue: which command? list, show, hold, release, delete, flush, freeze or thaw")
	}
	verb, ids := args[0], args[1:]
	switch verb {
	case control.VerbFlush:
		if len(ids) != 0 {
			return usageError("queue flush takes no arguments, not %q", ids[0])
		}
	case control.VerbList:
		// Options only: --held, --user U, --json (checked by relayd).
		if len(ids) > 0 && !strings.HasPrefix(ids[0], "--") {
			return usageError("queue list takes options only (--held, --user U, --json), not %q", ids[0])
		}
	case control.VerbFreeze, control.VerbThaw:
		if len(ids) == 0 {
			return usageError("queue %s needs --user ACCOUNT", verb)
		}
	case control.VerbShow:
		if len(ids) != 1 {
			return usageError("queue show takes one queue ID, not %d", len(ids))
		}
	case control.VerbHold, control.VerbRelease, control.VerbDelete:
		if len(ids) == 0 {
			return usageError("queue %s needs one or more queue IDs (or --user ACCOUNT)", verb)
		}
	case "mailq":
	default:
		return usageError("unknown queue command %q", verb)
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigErr(err)
		return sysexits.Config
	}
	if err := control.Request(cfg.ControlSocket, verb, ids, os.Stdout); err != nil {
		// Request's errors name the verb already.
		fmt.Fprintf(os.Stderr, "relayd: queue %s: %s\n", verb, strings.TrimPrefix(err.Error(), verb+": "))
		switch {
		case errors.Is(err, control.ErrUsage):
			return sysexits.Usage
		case errors.Is(err, control.ErrUnavailable):
			return sysexits.Unavailable
		case errors.Is(err, control.ErrDenied):
			return sysexits.NoPerm
		case errors.Is(err, control.ErrThrottled):
			return sysexits.TempFail
		}
		return 1 // refused by relayd (no such message, being delivered, ...)
	}
	return sysexits.OK
}

// policyWarnings names the [policy] tables whose user or group does not
// exist on this system: a typo there leaves the account it was meant for
// without its limits. Warnings, not errors: the account may be created
// after the configuration. "*" and "uid:N" keys always apply.
func policyWarnings(cfg *config.Config) []string {
	var ws []string
	for _, k := range slices.Sorted(maps.Keys(cfg.Policy.Accounts)) {
		switch {
		case k == "*" || strings.HasPrefix(k, "uid:"):
		case strings.HasPrefix(k, "group:"):
			var unknown user.UnknownGroupError
			if _, err := user.LookupGroup(k[6:]); errors.As(err, &unknown) {
				ws = append(ws, fmt.Sprintf("[policy.%q]: no group %q on this system: the table applies to nobody", k, k[6:]))
			}
		default:
			var unknown user.UnknownUserError
			if _, err := user.Lookup(k); errors.As(err, &unknown) {
				ws = append(ws, fmt.Sprintf("[policy.%s]: no user %q on this system: the table applies to nobody (\"uid:N\" names an account without a name)", k, k))
			}
		}
	}
	return ws
}
