package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDeps keeps the setgid binary small and provably free of what it must
// never do (tailscale's deptest idea): no TLS, no HTTP, no exec, no SMTP
// client, no SASL.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"crypto/tls",
		"net/http",
		"os/exec",
		"github.com/emersion/go-smtp",
		"github.com/emersion/go-sasl",
		"log/syslog",
		"log/slog", // relayd's mail log; sendmail has its own syslog writer
		"plugin",
		"github.com/mailshim/mailshim/pkg/relay",
		"github.com/mailshim/mailshim/pkg/queue",
		"github.com/mailshim/mailshim/pkg/maillog",
		"golang.org/x/net/idna", // relayd's IDN to A-label conversion (pkg/relay)
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("sendmail links %s", d)
			}
		}
	}
	if len(deps) < 10 {
		t.Fatalf("go list returned %q", out)
	}
}

// Code that sendmail's packages import but must not link, because it
// is large and sendmail has no use for it: every page of the binary's
// code and read-only data is mapped by the kernel at every call and
// unmapped at its exit, so each 64 KB costs every caller. sendmail
// links package net (net/mail parses addresses with it), but not its
// dialer and resolver (340 KB with DNS, /etc/hosts and nsswitch.conf):
// the socket clients connect with package unixconn's system calls. It
// imports encoding/json (BurntSushi/toml refers to json.Number), but not
// its encoder and decoder (240 KB): the control client reads and writes
// its two objects itself (pkg/control/wire.go).
func TestLinkedCode(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sendmail")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, s := range syms {
		if strings.HasPrefix(s.Name, "net.") {
			found++
		}
		for _, bad := range []string{"net.(*Dialer).", "net.(*Resolver).", "net.(*sysDialer).", "net.Dial", "net.Listen",
			"encoding/json.(*decodeState).", "encoding/json.(*encodeState).", "encoding/json.Marshal", "encoding/json.Unmarshal"} {
			if strings.HasPrefix(s.Name, bad) {
				t.Errorf("sendmail links %s", s.Name)
			}
		}
	}
	if found == 0 {
		t.Fatalf("no symbol of package net in %s: the check sees nothing", bin)
	}
}

// Start-up budget: sendmail runs once per message, so what its package
// initialisers do is paid by every caller. GODEBUG=inittrace=1 makes the
// runtime print, for each package with initialisation work, its time and
// the memory it allocated. The allocations are deterministic, so their
// budget is tight (building hash/crc32's Castagnoli tables at start-up,
// ~9 KB, or crypto/rand's initialisers would exceed it); the time varies
// with the machine's load, so it is the least of several runs under a
// generous bound.
const (
	initBytesBudget  = 14 << 10 // 13,376 bytes in 124 allocations measured
	initAllocsBudget = 132
	initTimeBudget   = 1.0 // ms, the least of initRuns (0.11-0.17 ms measured)
	initRuns         = 5
)

func TestInitBudget(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sendmail")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	conf := filepath.Join(t.TempDir(), "mailshim.conf")
	if err := os.WriteFile(conf, []byte("spool = \""+t.TempDir()+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	best := -1.0
	for run := 0; run < initRuns; run++ {
		cmd := exec.Command(bin, "-bp") // any mode: the trace is printed before main
		cmd.Env = []string{"PATH=/usr/bin:/bin", "GODEBUG=inittrace=1", "MAILSHIM_CONFIG=" + conf}
		out, _ := cmd.CombinedOutput()
		var ms float64
		var bytes, allocs, pkgs int
		for _, line := range strings.Split(string(out), "\n") {
			// init PKG @T ms, D ms clock, B bytes, A allocs
			f := strings.Fields(line)
			if len(f) != 11 || f[0] != "init" {
				continue
			}
			pkgs++
			if strings.HasPrefix(f[1], "crypto/") || f[1] == "math/big" {
				t.Errorf("sendmail initialises %s", f[1])
			}
			d, err1 := strconv.ParseFloat(f[4], 64)
			b, err2 := strconv.Atoi(f[7])
			a, err3 := strconv.Atoi(f[9])
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatalf("cannot read the init trace line %q", line)
			}
			ms += d
			bytes += b
			allocs += a
		}
		if pkgs < 10 {
			t.Fatalf("no init trace from %s:\n%s", bin, out)
		}
		if run == 0 {
			t.Logf("%d packages initialised: %d bytes in %d allocations", pkgs, bytes, allocs)
			if bytes > initBytesBudget || allocs > initAllocsBudget {
				t.Errorf("package initialisers allocate %d bytes in %d allocations; budget %d bytes, %d allocations\n%s",
					bytes, allocs, initBytesBudget, initAllocsBudget, out)
			}
		}
		if best < 0 || ms < best {
			best = ms
		}
	}
	t.Logf("package initialisers: %.3f ms (least of %d runs)", best, initRuns)
	if best > initTimeBudget {
		t.Errorf("package initialisers take %.3f ms (least of %d runs), budget %.1f ms", best, initRuns, initTimeBudget)
	}
}
