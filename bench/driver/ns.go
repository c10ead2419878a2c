package driver

import (
	"errors"
	"os"
	"os/exec"
)

const nsEnv = "MAILBENCH_PRIVATE_NS"

// EnterNamespace re-runs the driver inside a private mount namespace when
// it is root, so that the setgid sendmail (which ignores MAILSHIM_CONFIG)
// can be shown a private /etc/mailshim by a bind mount that nobody else
// sees. It returns done=true with the child's exit code when it did; the
// caller then exits. Not root, or already inside: done=false.
func EnterNamespace() (done bool, code int, err error) {
	if os.Geteuid() != 0 || os.Getenv(nsEnv) != "" {
		return false, 0, nil
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return false, 0, errors.New("bench: unshare(1) not found (util-linux); needed to give the setgid sendmail a private config")
	}
	// The mount point must exist; create it if the system has none, and
	// remove it afterwards (it is empty: the bind mount lived only in the
	// child's namespace).
	created := false
	if _, err := os.Stat(SystemConfDir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(SystemConfDir, 0o755); err != nil {
			return false, 0, err
		}
		created = true
	}
	if created {
		defer os.Remove(SystemConfDir)
	}
	self, err := os.Executable()
	if err != nil {
		return false, 0, err
	}
	cmd := exec.Command(unshare, append([]string{"--mount", "--propagation", "private", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), nsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return true, ee.ExitCode(), nil
	}
	if err != nil {
		return true, 1, err
	}
	return true, 0, nil
}
