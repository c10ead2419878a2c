// Package earlyenv neutralises, before any package that reads them is
// initialised, the environment variables with which a caller could make
// the Go standard library open files of their choice in the setgid
// sendmail: TZ (set to "", UTC) and ZONEINFO (time's local zone, loaded
// when a package's init asks for it — BurntSushi/toml's does, reading
// TZ=/path/of/choice before main runs) and GOROOT (time's fallback
// zoneinfo), which are removed.
//
// It works by import order alone. The Go spec initialises packages in
// import-path order among those whose imports are initialised; this
// package imports only syscall, which does not import time, so it becomes
// eligible before time and sorts before it ("github.com/..." < "time"):
// its init runs before time's and so before every package that can load
// the local zone. cmd/sendmail imports it for its side effect; a test
// (TestSetgidEnvironment) points TZ at a FIFO, which would block the
// program if anything opened it.
//
// main still clears the whole environment later (it must first read the
// trace variables); this package only handles what is read too early.
package earlyenv

import "syscall"

// Removed lists the variables removed at initialisation.
var Removed = []string{"ZONEINFO", "GOROOT"}

func init() {
	for _, k := range Removed {
		syscall.Unsetenv(k)
	}
	// TZ set and empty is UTC for package time, which then opens no file
	// at all (unset, it would read /etc/localtime when BurntSushi/toml's
	// initialiser asks for the zone: a file read at every call for a zone
	// main replaces with UTC anyway).
	syscall.Setenv("TZ", "")
}
