// Command sendmail is mailshim's sendmail-compatible drop-in. Installed
// setgid mailshim-drop, it writes each message atomically into the
// maildrop with the caller's kernel-verified UID; not setgid, it hands the
// message to relayd over the submission socket instead.
//
// SECURITY: this program runs setgid in hostile hands. In the order main
// does them (each has a test in e2e_test.go):
//
//   - fds 0, 1 and 2 are opened on /dev/null when closed, before anything
//     else can open a file that would land on them (the classic attack:
//     stderr closed, so that error text is written into the spool file).
//     The Go runtime does the same in secure mode; we do not rely on it.
//   - RLIMIT_NOFILE below minNOFILE is refused (exit 71, one line) before
//     any file is opened: the runtime would die at its first os.Open.
//     Syslog goes through raw system calls, never the network poller.
//   - umask 077; spool files get their mode explicitly (spool.NewDrop).
//   - The environment is read once for the trace variables
//     (origin.TraceVars) and, only when not running setgid,
//     MAILSHIM_CONFIG; then it is cleared. TZ cannot name a file to read:
//     package earlyenv empties TZ and removes ZONEINFO and GOROOT before any package
//     init can load the local zone, and time.Local is UTC. GOTRACEBACK is forced to "none" by the runtime in
//     secure mode (AT_SECURE); GODEBUG's output-producing settings are
//     tested not to fire (e2e_test.go). Built static, CGO_ENABLED=0: no
//     dynamic loader and no LD_* variables.
//   - No path comes from argv or the environment while setgid: -C, -X,
//     -d, -D, -be, -bt, -bd, -O QueueDirectory=..., -oQ... are refused and
//     logged with the UID; the configuration file is fixed at build time
//     (configPath).
//   - The message size is capped (max_message_size), the header section
//     too; the body is streamed, never held in memory.
//   - SIGXFSZ and SIGPIPE are ignored (RLIMIT_FSIZE becomes EFBIG, exit
//     73). SIGTERM, SIGINT, SIGHUP and SIGQUIT end sendmail by their
//     default action until the message's commit, and are ignored from
//     its start on (guard.Commit): killed before, nothing is stored (the
//     spool file is an O_TMPFILE, which never had a name, and the kernel
//     frees it; where O_TMPFILE is missing, a tmp. file that pickup
//     sweeps; through the submission socket, the commit is the end of the
//     message and relayd's answer); from the commit on, sendmail
//     finishes and its exit status says whether the message was stored
//     (through the socket, a relayd that goes away without an answer
//     leaves that unknown: 74, with a line saying it may have been).
//     No handler is needed for that, and os/signal's costs two runtime
//     threads at every call.
//     -bs, a dialogue that can last, has a handler (catchSignals): a
//     signal aborts the message being written and exits 74 with one
//     line; what the session stored stays queued (a message whose
//     commit had begun too, or may when relayd gave no answer to it,
//     which the line then says). Once the session
//     has ended they are ignored: sendmail exits with its status.
//   - The clock is ours (time.Now), never the caller's headers.
//   - chdir("/"). Never exec.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	_ "github.com/mailshim/mailshim/cmd/sendmail/internal/earlyenv" // first: see its doc
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maildrop"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"github.com/mailshim/mailshim/pkg/sysexits"
	"golang.org/x/sys/unix"
)

// configPath is the configuration file read when MAILSHIM_CONFIG is not
// honoured (always, when setgid). Tests that install a setgid copy set it
// at link time: go build -ldflags "-X main.configPath=/tmp/.../mailshim.conf".
// Release builds never set it.
var configPath = config.DefaultPath

// init reads the exe and cwd links of sendmail's caller while the Go
// runtime still runs the main goroutine locked to the main thread (see
// origin.PrefetchParentLinks): it opens no descriptor, and only lowers
// the thread's file access while it reads.
func init() { origin.PrefetchParentLinks() }

func main() {
	fixFDs()
	checkNOFILE()
	unix.Umask(0o077)
	env := captureEnv()
	time.Local = time.UTC
	signal.Ignore(syscall.SIGXFSZ, syscall.SIGPIPE)
	if err := os.Chdir("/"); err != nil {
		fail(sysexits.OSErr, "cannot chdir to /: %v", err)
	}
	exit(run(os.Args, env))
}

// exit ends the program. It takes the lock the signal handler keeps once
// it has started, so that an interrupted run ends with the handler's
// status and line, never with a second report of the failure the
// handler's abort caused.
func exit(code int) {
	current.Lock()
	os.Exit(code)
}

// fixFDs opens /dev/null on each of fds 0, 1 and 2 that is closed.
func fixFDs() {
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			continue
		}
		nfd, err := unix.Open("/dev/null", unix.O_RDWR, 0)
		if err != nil {
			os.Exit(sysexits.OSErr) // nowhere to say it
		}
		if nfd != fd {
			if err := unix.Dup3(nfd, fd, 0); err != nil {
				os.Exit(sysexits.OSErr)
			}
			unix.Close(nfd)
		}
	}
}

// minNOFILE is the least RLIMIT_NOFILE sendmail runs with. Below it, the
// Go runtime's first os.Open cannot create its epoll instance and the
// program dies with exit 2 and a runtime trace: refuse cleanly instead,
// before any file is opened. (RLIMIT_AS too low for the
// runtime's heap kills it before main runs: exit 2, nothing stored; that
// cannot be caught from Go.)
const minNOFILE = 16

func checkNOFILE() {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur >= minNOFILE {
		return
	}
	report(errorf(sysexits.OSErr, "the open file limit (RLIMIT_NOFILE) is %d, sendmail needs at least %d; message not sent", rl.Cur, minNOFILE).
		withHint("raise the limit (ulimit -n) of the program that runs sendmail"))
	exit(sysexits.OSErr)
}

// captureEnv returns the variables sendmail uses and clears the
// environment.
func captureEnv() map[string]string {
	env := make(map[string]string)
	for _, k := range origin.TraceVars {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	if v := os.Getenv("MAILSHIM_CONFIG"); v != "" && !config.Privileged() {
		env["MAILSHIM_CONFIG"] = v
	}
	os.Clearenv()
	return env
}

// current is the spool file being written, for the signal handler.
var current struct {
	sync.Mutex
	abort func()
}

// stores counts the commits that succeeded, and maybeStores those that
// ended without relayd's answer (submitsock.ErrNoAnswer: relayd may have
// stored the message). The handler compares them before and after it
// takes current's lock, which a commit holds: a message whose commit was
// under way when the signal came is stored, answered or not, or may be.
var stores, maybeStores atomic.Int64

func setCurrent(abort func()) {
	current.Lock()
	current.abort = abort
	current.Unlock()
}

// stopSignals are the signals that end sendmail (see the package
// comment).
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// quitByDefault gives SIGQUIT its default action (the process ends, as
// SIGTERM's does) instead of the Go runtime's, which prints "SIGQUIT:
// quit" and exits 2. run calls it in every mode but -bs, whose handler
// catches SIGQUIT. That default action would dump core: the process is
// made non-dumpable first (PR_SET_DUMPABLE 0, what the kernel already
// makes a setgid process unless fs.suid_dumpable says otherwise), so
// that no core file holds its memory whatever the system's setting. The
// runtime keeps no state that this contradicts: it looks at a signal's
// disposition only when os/signal changes it, and the later
// signal.Ignore in guard.Commit sets SIG_IGN whatever was there. The
// zero struct is the kernel's sigaction with SIG_DFL, no flags and an
// empty mask on every 64-bit architecture.
func quitByDefault() {
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	defaultAction(syscall.SIGQUIT)
}

// defaultAction sets sig's disposition to SIG_DFL.
func defaultAction(sig syscall.Signal) {
	var sa [4]uint64
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
}

// handled is set, by the main goroutine, when catchSignals handles
// stopSignals (-bs); otherwise they keep their default action until a
// commit ignores them.
var handled bool

// signalsCaught is closed once catchSignals's handler is in place. store
// waits for it, when handled, before any spool file exists.
var signalsCaught = make(chan struct{})

// catchSignals installs the handler of stopSignals and then runs it. -bs
// starts it on its own goroutine (setting handled first): os/signal's
// set-up costs two more threads of the runtime and a round trip with one
// of them per signal, which then overlaps with the dialogue. A signal
// that arrives before the handler is in place ends the process by its
// default action: nothing has been written then, since store waits for
// signalsCaught before the spool file is created. The handler runs only
// during the session (smtpSession ignores stopSignals once it has
// ended), so a signal always cuts one short: it exits 74 whatever the
// session stored, since the session did not complete.
func catchSignals() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, stopSignals...)
	close(signalsCaught)
	sig := <-c
	before, maybeBefore := stores.Load(), maybeStores.Load()
	current.Lock() // held until exit: no commit can start now
	if current.abort != nil {
		current.abort()
	}
	msg := "interrupted by " + sig.String() + ", SMTP session cut short: the messages answered 250 stay queued, any other was not sent"
	switch {
	case stores.Load() != before:
		msg = "interrupted by " + sig.String() + ", SMTP session cut short: the message being stored when the signal came was stored (answered or not), as were those answered 250; any other was not sent"
	case maybeStores.Load() != maybeBefore:
		msg = "interrupted by " + sig.String() + ", SMTP session cut short: the message being stored when the signal came may have been stored (relayd gave no answer; mailq shows whether it is queued), those answered 250 were; any other was not sent"
	}
	os.Stderr.WriteString("sendmail: " + msg + "\n")
	syslogf("status=%d error=%s", sysexits.IOErr, quote(msg))
	os.Exit(sysexits.IOErr)
}

// exitError is a failure with its exit code, its one line, and an
// optional hint.
type exitError struct {
	code int
	msg  string
	hint string
	// temporary: relayd refused it for now (submit.Error.Temporary);
	// -bs answers it 4xx.
	temporary bool
}

func errorf(code int, format string, a ...any) *exitError {
	return &exitError{code: code, msg: fmt.Sprintf(format, a...)}
}

func (e *exitError) withHint(h string) *exitError { e.hint = h; return e }

// fail prints "sendmail: ..." and exits. It is the one exit path for
// failures before run's own.
func fail(code int, format string, a ...any) {
	report(errorf(code, format, a...))
	exit(code)
}

// report prints a failure on stderr (one line, plus a hint line) and logs
// it with the caller's UID.
func report(e *exitError) {
	current.Lock() // see exit
	defer current.Unlock()
	msg := strings.Map(printable, e.msg)
	fmt.Fprintf(os.Stderr, "sendmail: %s\n", msg)
	if e.hint != "" {
		fmt.Fprintf(os.Stderr, "sendmail: hint: %s\n", strings.Map(printable, e.hint))
	}
	syslogf("status=%d error=%s", e.code, quote(msg))
}

func printable(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return '?'
	}
	return r
}

func quote(s string) string { return strconv.Quote(s) }

// run is sendmail after the start-up hardening: it returns the exit code.
func run(argv []string, env map[string]string) int {
	a, err := parseArgs(argv[0], argv[1:])
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			e := errorf(sysexits.Usage, "%s", ue.msg)
			e.hint = ue.hint
			report(e)
			return sysexits.Usage
		}
		report(errorf(sysexits.Usage, "%v", err))
		return sysexits.Usage
	}
	if a.mode != modeSMTP {
		quitByDefault()
	}
	cfg, e := loadConfig(env)
	if e != nil {
		report(e)
		return e.code
	}
	var code int
	switch a.mode {
	case modeDeliver:
		e = deliver(cfg, a, env)
	case modeSMTP:
		code, e = smtpSession(cfg, a, env)
	case modeQueue:
		e = queueList(cfg, a.json)
	case modeFlush:
		e = flush(cfg)
	case modeAliases:
		e = aliases(cfg)
	case modeVerify:
		e = verify(a)
	default:
		e = errorf(sysexits.Software, "mode %q not implemented", a.mode)
	}
	if e != nil {
		report(e)
		return e.code
	}
	return code
}

func loadConfig(env map[string]string) (*config.Config, *exitError) {
	path := configPath
	if p := env["MAILSHIM_CONFIG"]; p != "" {
		path = p
	}
	cfg, err := config.Load(path)
	if err != nil {
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			return nil, errorf(sysexits.OSErr, "cannot read the configuration: %v; message not sent", err).
				withHint("raise the open file limit (ulimit -n) of the program that runs sendmail")
		}
		if errors.Is(err, fs.ErrNotExist) && path == config.DefaultPath {
			cfg = config.Default()
		} else {
			return nil, errorf(sysexits.Config, "configuration error: %v", err).
				withHint("check the file with: relayd check-config")
		}
	}
	if cfg.Hostname == "" {
		cfg.Hostname = hostname()
	}
	return cfg, nil
}

// hostname is /etc/mailname, else the system host name.
func hostname() string {
	if b, err := os.ReadFile("/etc/mailname"); err == nil {
		if s := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]); s != "" && !message.HasControl(s) {
			return s
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// envelope validates the command line's sender, full name, DSN options
// and recipients.
func envelope(a *args) (spool.Envelope, *exitError) {
	var env spool.Envelope
	if a.senderSet {
		s := strings.TrimSpace(a.sender)
		switch {
		case message.HasControl(a.sender):
			return env, errorf(sysexits.Usage, "invalid sender address %s given with -f: %s", strconv.QuoteToASCII(trunc(a.sender)), controlWhy)
		case s == "" || s == "<>":
			env.Sender = "<>"
		default:
			addr, err := message.ParseAddress(s)
			if err != nil {
				return env, errorf(sysexits.Usage, "invalid sender address %q given with -f: %v", trunc(s), err)
			}
			env.Sender = addr
		}
	}
	if a.fullSet {
		if message.HasControl(a.fullName) {
			return env, errorf(sysexits.Usage, "invalid full name %s given with -F: %s", strconv.QuoteToASCII(trunc(a.fullName)), controlWhy)
		}
		if len(a.fullName) > message.MaxFullName {
			return env, errorf(sysexits.Usage, "full name given with -F is longer than %d bytes", message.MaxFullName)
		}
		env.FullName = strings.TrimSpace(a.fullName)
	}
	env.Notify = dsnOption(a.notify, "-N", &a.ignored, message.ParseNotify)
	env.Ret = dsnOption(a.ret, "-R", &a.ignored, message.ParseRet)
	env.BodyType = dsnOption(a.bodyType, "-B", &a.ignored, message.ParseBody)
	env.EnvID = dsnOption(a.envID, "-V", &a.ignored, envID)
	for _, r := range a.recipients {
		list, err := message.ParseList(r)
		if err != nil {
			return env, errorf(sysexits.NoUser, "invalid recipient address %q: %v", trunc(r), err).
				withHint("recipients follow the options; an option after the first recipient is taken as an address")
		}
		env.Recipients = append(env.Recipients, list...)
	}
	return env, nil
}

// controlWhy is why a -f or -F value with message.HasControl is refused;
// the value is shown escaped (strconv.QuoteToASCII), so that an invisible
// one (U+202E, U+2028) can be seen.
const controlWhy = "it contains a control character (CR, LF, NUL, another C0 or C1 control, a Unicode line separator or bidirectional control)"

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// dsnOption returns the stored form of a DSN option's value v as parse
// gives it; a value parse refuses is ignored (recorded in ignored with
// its option opt), as sendmail ignores what it does not know.
func dsnOption(v, opt string, ignored *[]string, parse func(string) (string, bool)) string {
	if v == "" {
		return ""
	}
	if p, ok := parse(v); ok {
		return p
	}
	*ignored = append(*ignored, opt+v)
	return ""
}

// envID is parse for -V: the value is taken as it is (not xtext), as
// sendmail takes it.
func envID(v string) (string, bool) { return v, message.ValidEnvID(v) }

// deliver is the default mode: a message on stdin, recipients from argv
// and (-t) the header.
func deliver(cfg *config.Config, a *args, envVars map[string]string) *exitError {
	env, e := envelope(a)
	if e != nil {
		return e
	}
	org := origin.Collect(envVars)
	if e := checkSender(cfg, &org, env.Sender); e != nil {
		return e
	}
	org.Ignored = a.ignored
	org.Mode = "bm"
	if a.extract {
		org.Mode = "t"
	}
	in := &errReader{r: os.Stdin}
	br := bufio.NewReaderSize(message.NewReader(in, a.ignoreDots), headerBuf)
	h, err := message.ReadHeader(br, headerLimit(cfg))
	if err != nil {
		return inputError(err, in)
	}
	if a.extract {
		rcpts, err := message.Recipients(h)
		if err != nil {
			return errorf(sysexits.NoUser, "%v", err)
		}
		env.Recipients = append(env.Recipients, rcpts...)
		message.RemoveBcc(h)
	}
	env.Recipients = message.Dedup(env.Recipients)
	if len(env.Recipients) == 0 {
		if a.extract {
			return errorf(sysexits.Usage, "no recipient addresses found in the message header").
				withHint("with -t, the recipients come from To:, Cc: and Bcc:")
		}
		return errorf(sysexits.Usage, "no recipients given").
			withHint("usage: sendmail [options] recipient... < message, or sendmail -t < message")
	}
	_, e = store(cfg, &env, &org, h, br, in)
	return e
}

// checkSender applies the sender policy ([policy] allowed_senders) to a
// sender the caller gave: EX_NOPERM (77) when it is not allowed.
func checkSender(cfg *config.Config, org *spool.Origin, sender string) *exitError {
	err := cfg.CheckSender(org.User, org.UID, sender)
	if err == nil {
		return nil
	}
	return errorf(sysexits.NoPerm, "%v", err).
		withHint("leave out -f, or ask the administrator: [policy] allowed_senders in " + cfg.Source)
}

// store writes the message into the maildrop (or, not setgid, through
// the submission socket; see maildrop.Local) and returns nil only once it is
// durable.
func store(cfg *config.Config, env *spool.Envelope, org *spool.Origin, h *message.Header, body io.Reader, in *errReader) (string, *exitError) {
	if handled {
		<-signalsCaught // the handler must be able to remove the spool file
	}
	l := &maildrop.Local{Spool: cfg.Spool, Hostname: cfg.Hostname, MaxSize: cfg.MaxMessageSize,
		Socket: cfg.SubmitSocket, Fallback: !config.Privileged(), Guard: guard{}}
	id, err := l.Store(env, org, h, body)
	if err == nil {
		return id, nil
	}
	var (
		ee *message.EnvelopeError
		sm *maildrop.SpoolMissingError
		ue *maildrop.UnavailableError
		se *submit.Error
	)
	switch {
	case errors.As(err, &ee):
		return "", errorf(ee.Code, "%s", ee.Msg)
	case errors.As(err, &sm):
		return "", errorf(sysexits.CantCreat, "%v", sm).
			withHint("start relayd once (it creates the spool), or check spool= in the configuration")
	case errors.As(err, &ue):
		return "", errorf(sysexits.IOErr, "cannot submit the message: %v", ue).
			withHint("install sendmail setgid mailshim-drop, or start relayd")
	case errors.As(err, &se):
		e := errorf(se.Code, "relayd refused the message: %s", se.Msg)
		e.temporary = se.Temporary
		return "", e
	case submitsock.IsReadError(err):
		return "", classify(errors.Unwrap(err), in, cfg.MaxMessageSize)
	case errors.Is(err, submitsock.ErrNoAnswer):
		return "", errorf(sysexits.IOErr, "relayd gave no valid answer after the end of the message: it may have been stored (%v)", err).
			withHint("mailq shows whether it is queued; send it again only if it is not")
	}
	return "", classify(err, in, cfg.MaxMessageSize)
}

// guard is the signals' side of a store: the handler (-bs) learns how to
// remove the spool file being written, and the commit runs under its
// lock; without a handler, the commit ignores stopSignals from its start.
type guard struct{}

func (guard) Writing(abort func()) { setCurrent(abort) }

func (guard) Commit(commit func() error) error {
	current.Lock()
	defer current.Unlock()
	if !handled {
		// From here the message may become visible in the maildrop (and
		// be delivered): a signal must not end sendmail now, since its
		// caller would take the message for lost and send it again.
		// Ignoring costs a sigaction(2) per signal; a signal already
		// pending is discarded. sendmail exits soon after, with the
		// commit's result.
		signal.Ignore(stopSignals...)
	}
	err := commit()
	switch {
	case err == nil:
		stores.Add(1)
	case errors.Is(err, submitsock.ErrNoAnswer):
		maybeStores.Add(1)
	}
	current.abort = nil
	return err
}

// errReader remembers a read error of the caller's input, so that it is
// not mistaken for a spool write error.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// inputError is a failure to read the message's header section:
// readFailure's line, else the error as it came.
func inputError(err error, in *errReader) *exitError {
	if e := readFailure(err, in); e != nil {
		return e
	}
	return errorf(sysexits.IOErr, "cannot read the message: %v", err)
}

// readFailure is the line for a failure to read the message, in its
// header section or its body: standard input's error, an input that ends
// inside DATA (-bs), a smuggled end of DATA, a header over the limits; nil
// for any other error.
func readFailure(err error, in *errReader) *exitError {
	switch {
	case in.err != nil:
		return errorf(sysexits.IOErr, "cannot read the message from standard input: %v; message not sent", in.err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(sysexits.IOErr, "the input ended in the middle of the message; message not sent")
	case errors.Is(err, message.ErrBareDataEnd):
		return errorf(sysexits.DataErr, "%v", err)
	case errors.Is(err, message.ErrHeaderTooLarge):
		return headerTooLarge()
	}
	return nil
}

// headerTooLarge is the refusal of a header over package message's limits,
// which relayd's pickup shares.
func headerTooLarge() *exitError {
	return errorf(sysexits.DataErr, "%v", message.ErrHeaderTooLarge).
		withHint("fold long header fields, or send to fewer recipients per message")
}

// classify turns a failure to write the spool file into an exit error.
func classify(err error, in *errReader, limit int64) *exitError {
	if e := readFailure(err, in); e != nil {
		return e
	}
	switch {
	case errors.Is(err, spool.ErrTooLarge):
		return errorf(sysexits.DataErr, "%v", &submit.SizeError{Limit: limit}).
			withHint("max_message_size in the configuration")
	case errors.Is(err, syscall.EFBIG):
		// The caller's RLIMIT_FSIZE, not the spool: "the spool is full"
		// would send the administrator to df for nothing.
		return errorf(sysexits.CantCreat, "the message is over this process's file size limit (RLIMIT_FSIZE, ulimit -f): %v; message not sent", err).
			withHint("raise the file size limit of the program that runs sendmail")
	case spool.IsFull(err):
		return errorf(sysexits.CantCreat, "the spool is full: %v; message not sent", err).
			withHint("free space on the spool's file system")
	}
	return errorf(sysexits.CantCreat, "cannot write the spool file: %v; message not sent", err)
}
