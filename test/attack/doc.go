// Package attack is mailshim's local-attacker suite: every case is an
// unprivileged local user (nobody, or a UID of its own with no account)
// attacking the real binaries — the setgid sendmail, relayd and its
// sockets — and checks that the defence held. Each case logs one line,
// "attack: CASE: tried ...; held ...", and the suite prints the totals at
// the end (docs/SECURITY.md quotes them).
//
// The cases need root (to install sendmail setgid and to run the attacker
// under other UIDs); without root they are skipped and say so. `make
// attack` runs them (part of `make test`, which CI runs as root).
package attack
