package config

import "path/filepath"

// DefaultSpool is the system spool.
const DefaultSpool = "/var/spool/mailshim"

// Socket names inside a private spool (see placeSockets).
const (
	SpoolControlSocket = "control.sock"
	SpoolSubmitSocket  = "submit.sock"
)

// placeSockets puts the sockets the file does not name (set reports which
// keys it sets) inside a spool that is not the system one: a private spool
// (tests, the demo, a second instance under MAILSHIM_CONFIG) then needs
// nothing but its directory, and never shares /run/mailshim with the
// system's relayd. The spool root (0711) lets every user reach them, as
// the submission socket must be. sendmail, relayd and its queue commands
// load the same file, so they agree on the paths.
func (c *Config) placeSockets(set func(key string) bool) {
	if filepath.Clean(c.Spool) == DefaultSpool {
		return
	}
	if !set("control_socket") {
		c.ControlSocket = filepath.Join(c.Spool, SpoolControlSocket)
	}
	if !set("submit_socket") {
		c.SubmitSocket = filepath.Join(c.Spool, SpoolSubmitSocket)
	}
}
