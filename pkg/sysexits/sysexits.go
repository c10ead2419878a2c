// Package sysexits is the table of exit codes from BSD's sysexits.h that
// sendmail-compatible programs use.
//
// mailshim's rule (PRODUCT.md): EX_TEMPFAIL (75) is never returned for a
// message that was not stored, because callers disagree on what 75 means;
// a message that could not be written exits EX_CANTCREAT or EX_IOERR.
//
// Its Go API is not stable.
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
