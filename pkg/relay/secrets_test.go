package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A ca_file that holds no certificate (the key, a DER file, the wrong
// file) and a client_cert/client_key pair that does not load cannot work:
// relayd refused them at every delivery while check-config, the start and
// a reload took them (the log said "holds no PEM certificate" for each
// message). They are configuration errors, like a ca_file that is missing:
// config.LoadSecrets reports them through the check this package sets
// (config.TLSFilesCheck), here as in relayd.
func TestLoadSecretsTLSFilesThatDoNotLoad(t *testing.T) {
	srv := smtptest.New(t, smtptest.Options{RequireClientCert: true})
	ca := srv.Upstream().CAFile
	garbage := filepath.Join(t.TempDir(), "hostname")
	if err := os.WriteFile(garbage, []byte("web1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := "\n[[upstream]]\nhost = \"a.example\"\nca_file = \"" + garbage + "\"\n\n" +
		"[[upstream]]\nhost = \"b.example\"\nca_file = \"" + ca + "\"\n" +
		"client_cert = \"" + srv.ClientCert + "\"\nclient_key = \"" + ca + "\"\n\n" +
		"[[upstream]]\nhost = \"c.example\"\nca_file = \"" + ca + "\"\n" +
		"client_cert = \"" + srv.ClientCert + "\"\nclient_key = \"" + srv.ClientKey + "\"\n"
	c, err := config.Parse("t.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	got := c.LoadSecrets()
	errs := config.Errors(got)
	if len(errs) != 2 || errs[0].Line != 4 || errs[0].Key != "upstream.ca_file" || !strings.Contains(errs[0].Msg, "no PEM certificate") ||
		errs[1].Line != 9 || errs[1].Key != "upstream.client_cert" || !strings.Contains(errs[1].Msg, "cannot load the client certificate") {
		t.Errorf("LoadSecrets:\n%v", got)
	}
}
