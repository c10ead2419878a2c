package main

import (
	"path/filepath"
	"strconv"
	"strings"
)

// Modes of operation (-b letters, -q, and argv[0]).
const (
	modeDeliver = "bm" // read a message, store it (default)
	modeSMTP    = "bs" // SMTP dialogue on stdin/stdout
	modeQueue   = "bp" // list the queue (mailq)
	modeAliases = "bi" // validate aliases (newaliases)
	modeVerify  = "bv" // verify recipient addresses
	modeFlush   = "q"  // ask relayd to flush the queue
)

// args is the parsed command line.
type args struct {
	mode       string
	extract    bool // -t
	ignoreDots bool // -i, -oi
	sender     string
	senderSet  bool
	fullName   string
	fullSet    bool
	notify     string // -N
	ret        string // -R
	envID      string // -V
	bodyType   string // -B
	verbose    bool
	recipients []string // raw, validated later
	ignored    []string // options accepted and ignored, for the origin record
	json       bool     // mailq --json
}

// usageError is a command-line error (EX_USAGE). refused marks an option
// that was refused for safety: it is logged with the caller's UID.
type usageError struct {
	msg     string
	hint    string
	refused bool
}

func (e *usageError) Error() string { return e.msg }

// pathOptions are the long -O options (and their -o letters) that name a
// file or directory, or change where sendmail reads its configuration:
// refused, whatever their value.
var pathOptions = map[string]bool{
	"queuedirectory": true, "aliasfile": true, "statusfile": true, "helpfile": true,
	"deadletterdrop": true, "safefileenvironment": true, "forwardpath": true,
	"servicesswitchfile": true, "hostsfile": true, "hoststatusdirectory": true,
	"controlsocketname": true, "pidfile": true,
	"queuefilemode": true, "tempfilemode": true, "dontblamesendmail": true,
	"runasuser": true, "defaultuser": true, "trustedusers": true, "cacertpath": true,
	"cacertfile": true, "servercertfile": true, "serverkeyfile": true,
	"clientcertfile": true, "clientkeyfile": true, "crlfile": true, "randfile": true,
	"dhparameters": true, "logfile": true, "configfile": true,
	"q": true, "a": true, "s": true, "h": true,
}

// parseArgs parses sendmail's command line the way Sendmail and Postfix
// do: a getopt loop over the historic letters (pflag cannot: it reads -odi
// as -o -d -i), options end at the first non-option or "--", everything
// after is a recipient. argv0 picks mailq / newaliases mode.
func parseArgs(argv0 string, argv []string) (*args, error) {
	a := &args{mode: modeDeliver}
	switch filepath.Base(argv0) {
	case "mailq":
		a.mode = modeQueue
	case "newaliases":
		a.mode = modeAliases
	}
	i := 0
	// value returns the argument of an option letter: the rest of this
	// word, else the next word.
	value := func(word string, j int, letter byte) (string, error) {
		if j+1 < len(word) {
			return word[j+1:], nil
		}
		if i+1 < len(argv) {
			i++
			return argv[i], nil
		}
		return "", &usageError{msg: "option -" + string(letter) + " needs a value"}
	}
	refuse := func(opt string) error {
		return &usageError{
			msg:     "option " + opt + " is refused: it would choose a file or the configuration",
			hint:    "remove it from the command line (PHP: the 5th argument of mail())",
			refused: true,
		}
	}
	// refusePath names the whole word, so that the log points at what
	// the caller added (-oi-X/tmp/x blames neither -oi nor -X alone).
	refusePath := func(word string) error {
		return &usageError{
			msg:     "option " + strconv.Quote(word) + " is refused: it names a path",
			hint:    "remove it from the command line (PHP: the 5th argument of mail())",
			refused: true,
		}
	}
words:
	for ; i < len(argv); i++ {
		w := argv[i]
		if w == "--" {
			i++
			break
		}
		if w == "--json" && a.mode == modeQueue {
			// mailq --json (or sendmail -bp --json): the queue as JSON.
			a.json = true
			continue
		}
		if len(w) < 2 || w[0] != '-' {
			break
		}
		for j := 1; j < len(w); j++ {
			c := w[j]
			switch c {
			case 't':
				a.extract = true
			case 'i':
				a.ignoreDots = true
			case 'v':
				a.verbose = true
			case 'm', 'n', 'G', 'U':
				// -m (me too), -n (no aliasing), -G (gateway), -U (initial
				// submission): nothing to do in a relay-only MTA.
			case 'f', 'r':
				v, err := value(w, j, c)
				if err != nil {
					return nil, err
				}
				a.sender, a.senderSet = v, true
				continue words
			case 'F':
				v, err := value(w, j, c)
				if err != nil {
					return nil, err
				}
				a.fullName, a.fullSet = v, true
				continue words
			case 'N', 'R', 'V', 'B', 'L', 'h', 'p', 'A':
				v, err := value(w, j, c)
				if err != nil {
					return nil, err
				}
				switch c {
				case 'N':
					a.notify = v
				case 'R':
					a.ret = v
				case 'V':
					a.envID = v
				case 'B':
					a.bodyType = v
				case 'p':
					if strings.Contains(v, "/") {
						return nil, refusePath("-p" + v)
					}
				}
				continue words
			case 'b':
				if j+1 >= len(w) {
					return nil, &usageError{msg: "option -b needs a mode letter"}
				}
				switch m := w[j+1:]; m {
				case "m":
					a.mode = modeDeliver
				case "s":
					a.mode = modeSMTP
				case "p":
					a.mode = modeQueue
				case "i":
					a.mode = modeAliases
				case "v":
					a.mode = modeVerify
				case "e", "t", "d", "D", "a", "h", "H", "P":
					return nil, refuse("-b" + m)
				default:
					return nil, &usageError{msg: "unsupported mode -b" + m}
				}
				continue words
			case 'q':
				// -q, -q30m, -qR..., -qI...: all mean "flush now" here.
				a.mode = modeFlush
				continue words
			case 'Q', 'M':
				// -Q[reason] (quarantine), -Mxvalue (macro): ignored.
				if strings.Contains(w[j:], "/") {
					return nil, refusePath("-" + w[j:])
				}
				a.ignored = append(a.ignored, "-"+w[j:])
				continue words
			case 'o':
				v, err := value(w, j, c)
				if err != nil {
					return nil, err
				}
				if err := a.shortOption(v, refuse, refusePath); err != nil {
					return nil, err
				}
				continue words
			case 'O':
				v, err := value(w, j, c)
				if err != nil {
					return nil, err
				}
				name, _, _ := strings.Cut(v, "=")
				if pathOptions[strings.ToLower(strings.TrimSpace(name))] {
					return nil, refuse("-O " + strings.TrimSpace(name))
				}
				if strings.Contains(v, "/") {
					return nil, refusePath("-O" + v)
				}
				a.ignored = append(a.ignored, "-O"+v)
				continue words
			case 'C', 'X', 'd', 'D':
				return nil, refuse("-" + string(c))
			default:
				// Unknown: ignored and recorded, never a failure that would
				// lose a cron job's mail. An argument naming a path is
				// refused, since we cannot know what it would do.
				if strings.Contains(w[j:], "/") {
					return nil, refusePath("-" + w[j:])
				}
				a.ignored = append(a.ignored, "-"+w[j:])
				continue words
			}
		}
	}
	a.recipients = append(a.recipients, argv[i:]...)
	return a, nil
}

// shortOption handles -o<letter><value> (old-style Sendmail options).
func (a *args) shortOption(v string, refuse, refusePath func(string) error) error {
	if v == "" {
		return &usageError{msg: "option -o needs a value"}
	}
	switch v {
	case "i":
		a.ignoreDots = true
		return nil
	case "em", "ep", "eq", "ew", "ee", "di", "db", "dq", "m":
		return nil
	}
	if pathOptions[strings.ToLower(v[:1])] {
		return refuse("-o" + v[:1])
	}
	if strings.Contains(v, "/") {
		return refusePath("-o" + v)
	}
	a.ignored = append(a.ignored, "-o"+v)
	return nil
}
