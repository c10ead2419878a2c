// Command relayd is mailshim's delivery daemon: it drains the spool's
// maildrop into its private queue and relays every message to the upstream
// smarthost over verified TLS with SASL AUTH. It runs unprivileged, in the
// foreground, logging one key=value line per event to stderr.
//
//	relayd [run] [--config F] [--stop-timeout D]   run the daemon
//	relayd check-config [--config F]   validate config and spool; exit 0 or 78
//	relayd queue list|show ID|hold ID...|release ID...|delete ID...|flush
//	relayd tls-init [--force]   make the loopback listener's certificate (root)
//	relayd doctor [--upstream N] [--sender A] [--rcpt A] [--send-to A] [--json]
//	relayd queue list [--held] [--user U] [--json]
//	relayd queue freeze|thaw|hold|release --user U
//	relayd queue delete --user U [--confirm N]
//	relayd verify-origin < message   is its origin header genuine? exit 0 or 1
//	relayd stats [--json]   per account: the last hour and day
//
// Signals: SIGTERM and SIGINT finish (or, after --stop-timeout, abort) the
// sessions in flight and exit 0; SIGHUP reloads the configuration (a bad one
// is refused with a log line and the old one kept).
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: relayd [run] [--config FILE] [--stop-timeout 20s]
       relayd check-config [--config FILE]
       relayd queue list | show ID | hold ID... | release ID... | delete ID... | flush
       relayd tls-init [--force] [--name NAME]...
       relayd doctor [--upstream N] [--sender ADDR] [--rcpt ADDR] [--send-to ADDR] [--json]
       relayd queue list [--held] [--user U] [--json]
       relayd queue freeze | thaw | hold | release --user U
       relayd queue delete --user U [--confirm N]
       relayd verify-origin [--config FILE] < message
       relayd stats [--json]
`)
}

// usageError says on one line what was wrong with the command line
// (relayd(8): every non-zero status comes with one), prints the usage and
// returns EX_USAGE.
func usageError(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "relayd: "+format+"\n", args...)
	usage()
	return sysexits.Usage
}

func main() {
	// tls-init has flags of its own: it parses its arguments itself.
	if len(os.Args) > 1 && os.Args[1] == "tls-init" {
		os.Exit(tlsInit(os.Args[2:]))
	}
	if code, ok := doctorMain(os.Args[1:]); ok {
		os.Exit(code)
	}
	fs := pflag.NewFlagSet("relayd", pflag.ContinueOnError)
	fs.Usage = usage
	cfgPath := fs.StringP("config", "c", "", "configuration file (default "+config.DefaultPath+", or $MAILSHIM_CONFIG)")
	stopTimeout := fs.Duration("stop-timeout", 20*time.Second, "on SIGTERM, how long sessions in flight may finish before they are aborted")
	argv, sub := splitSubcommand(os.Args[1:])
	if err := fs.Parse(argv); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "relayd: %v\n", err)
		os.Exit(sysexits.Usage)
	}
	path := *cfgPath
	if path == "" {
		path = config.Path()
	}
	args := append(fs.Args(), sub...)
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		if len(args) > 0 {
			os.Exit(usageError("run takes no arguments, not %q", args[0]))
		}
		os.Exit(run(path, *stopTimeout))
	case "check-config":
		os.Exit(checkConfig(path))
	case "queue":
		os.Exit(queueCmd(path, args))
	case "stats":
		os.Exit(statsCmd(path, args))
	case "verify-origin":
		os.Exit(verifyOrigin(path, args, os.Stdin, os.Stdout))
	case "help":
		usage()
	default:
		os.Exit(usageError("unknown command %q", cmd))
	}
}

// splitSubcommand keeps the options of a "queue" or "verify-origin"
// command (--held, --user, --json, --confirm ...) away from relayd's own
// flag parser, which would refuse them: it returns the arguments for
// pflag (everything up to the command, the command itself, and any
// --config/-c given after it) and the command's own arguments.
func splitSubcommand(args []string) (flags, sub []string) {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--config" || a == "-c" || a == "--stop-timeout":
			i++ // its value
		case strings.HasPrefix(a, "-"):
		case a == "queue" || a == "verify-origin" || a == "stats":
			flags = append(flags, args[:i+1]...)
			rest := args[i+1:]
			for j := 0; j < len(rest); j++ {
				switch r := rest[j]; {
				case (r == "--config" || r == "-c") && j+1 < len(rest):
					flags = append(flags, r, rest[j+1])
					j++
				case strings.HasPrefix(r, "--config="):
					flags = append(flags, r)
				default:
					sub = append(sub, r)
				}
			}
			return flags, sub
		default:
			return args, nil // another command: pflag parses it all
		}
	}
	return args, nil
}
