// Package submittest is what the tests of mailshim's doors share: the
// refusals of the submission pipeline with the SMTP reply every SMTP door
// (sendmail -bs, relayd's listener) must give each, and a Store that
// writes messages into a directory as maildrop files. Only tests import
// it.
//
// Its Go API is not stable.
package submittest

import (
	"io"
	"path/filepath"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// Refusal is a refusal of the pipeline at DATA and the code and
// enhanced status ("553 5.7.1") an SMTP door must answer it with, before
// a text that holds Err.Msg.
type Refusal struct {
	Name string
	Err  *submit.Error
	Want string
}

// Refusals is the table of submit.SMTPReply, one row a refusal class,
// written out here so that a door's test does not compute its
// expectation with the function it tests.
var Refusals = []Refusal{
	{"no recipients", &submit.Error{Code: sysexits.Usage, Msg: "no recipients"}, "554 5.5.1"},
	{"too large", &submit.Error{Code: sysexits.DataErr, Msg: "message too large"}, "552 5.3.4"},
	{"recipient", &submit.Error{Code: sysexits.NoUser, Msg: "invalid recipient address"}, "553 5.1.3"},
	{"policy", &submit.Error{Code: sysexits.NoPerm, Msg: "policy: the From: address is not allowed"}, "553 5.7.1"},
	{"rate", &submit.Error{Code: sysexits.NoPerm, Msg: "policy: rate limit reached", Temporary: true}, "451 4.7.1"},
	{"spool full", &submit.Error{Code: sysexits.CantCreat, Msg: "the spool is full"}, "452 4.3.1"},
	{"local trouble", &submit.Error{Code: sysexits.IOErr, Msg: "could not store the message"}, "451 4.3.0"},
}

// DropStore is a submit.Store that writes each message, at most max
// bytes, as a maildrop file (spool.NewDrop) into dir: the store the
// tests of the submission socket put where relayd has its queue.
func DropStore(dir string, max int64) submit.Store {
	return func(m *spool.Meta, body io.Reader) (string, error) {
		d0, err := spool.OpenDir(filepath.Dir(dir), filepath.Base(dir))
		if err != nil {
			return "", err
		}
		defer d0.Close()
		d, err := spool.NewDrop(d0, m, max)
		if err != nil {
			return "", err
		}
		if _, err := io.Copy(d, body); err != nil {
			d.Abort()
			return "", err
		}
		return m.ID, d.Commit()
	}
}
