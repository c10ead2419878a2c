package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// maxVerifyInput bounds what verify-origin reads: the header section is
// all it needs.
const maxVerifyInput = 16 << 20

// verifyOrigin reads a delivered message on stdin and says whether its
// origin header was signed by a relayd holding [trace] key_file, for this
// message: exit 0 and "genuine: <trace>", 1 and "not genuine: <why>", 78
// when no key is configured or it cannot be read, 74 when the message
// cannot be read.
func verifyOrigin(path string, args []string, in io.Reader, out io.Writer) int {
	if len(args) > 0 {
		return usageError("verify-origin reads the message on standard input and takes no arguments, not %q", args[0])
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigErr(err)
		return sysexits.Config
	}
	if cfg.Trace.KeyFile == "" {
		return fatal(sysexits.Config, "verify-origin: [trace] key_file is not set in %s: origin headers are not signed, so none can be verified", cfg.Source)
	}
	key, err := config.ReadSecret(cfg.Trace.KeyFile)
	if err != nil {
		return fatal(sysexits.Config, "verify-origin: [trace] key_file: %v (run it as root or as the daemon user)", err)
	}
	trace, err := pickup.VerifyOrigin([]byte(key), cfg.Trace.Header, io.LimitReader(in, maxVerifyInput))
	switch {
	case errors.Is(err, pickup.ErrNotGenuine):
		fmt.Fprintf(out, "%s\n", err)
		return 1
	case err != nil:
		return fatal(sysexits.IOErr, "verify-origin: %v", err)
	}
	fmt.Fprintf(out, "genuine: %s: %s\n", cfg.Trace.Header, trace)
	return sysexits.OK
}
