// Package sysexits is the table of exit codes from BSD's sysexits.h that
// sendmail-compatible programs use.
//
// mailshim's rule (PRODUCT.md): EX_TEMPFAIL (75) is never returned for a
// message that was not stored, because callers disagree on what 75 means;
// a message that could not be written exits EX_CANTCREAT or EX_IOERR.
package sysexits

// Exit codes, as in /usr/include/sysexits.h.
const (
	OK          = 0  // successful termination
	Usage       = 64 // command line usage error
	DataErr     = 65 // data format error
	NoInput     = 66 // cannot open input
	NoUser      = 67 // addressee unknown
	NoHost      = 68 // host name unknown
	Unavailable = 69 // service unavailable
	Software    = 70 // internal software error
	OSErr       = 71 // system error
	OSFile      = 72 // critical OS file missing
	CantCreat   = 73 // can't create (user) output file
	IOErr       = 74 // input/output error
	TempFail    = 75 // temp failure; never used for a message that was not stored
	Protocol    = 76 // remote error in protocol
	NoPerm      = 77 // permission denied
	Config      = 78 // configuration error
)

var names = map[int]string{
	OK: "EX_OK", Usage: "EX_USAGE", DataErr: "EX_DATAERR", NoInput: "EX_NOINPUT",
	NoUser: "EX_NOUSER", NoHost: "EX_NOHOST", Unavailable: "EX_UNAVAILABLE",
	Software: "EX_SOFTWARE", OSErr: "EX_OSERR", OSFile: "EX_OSFILE",
	CantCreat: "EX_CANTCREAT", IOErr: "EX_IOERR", TempFail: "EX_TEMPFAIL",
	Protocol: "EX_PROTOCOL", NoPerm: "EX_NOPERM", Config: "EX_CONFIG",
}

// Name returns the symbolic name of code, e.g. "EX_CANTCREAT", or "EX_<n>".
func Name(code int) string {
	if n, ok := names[code]; ok {
		return n
	}
	return "EX_" + itoa(code)
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
