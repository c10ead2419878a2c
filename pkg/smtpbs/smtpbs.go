// Package smtpbs is the server of "sendmail -bs": an SMTP dialogue
// (RFC 5321) on the caller's stdin and stdout, handing each message to the
// caller's store (sendmail's: maildrop.Local). It is deliberately minimal,
// written on the standard library and package message alone, so that the
// setgid binary links no SMTP library, TLS or network server.
//
// Its Go API is not stable.
package smtpbs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
)

// Server is the server side of "sendmail -bs": an SMTP dialogue (RFC 5321)
// on the caller's stdin and stdout, as Symfony Mailer and Laravel use by
// default. It is deliberately minimal — line-based commands, DATA with
// dot-unstuffing — so that the setgid binary needs no SMTP library.
type Server struct {
	// Hostname is used in the greeting and the HELO/EHLO reply.
	Hostname string
	// MaxSize is advertised in EHLO (SIZE) and checked against MAIL
	// FROM's SIZE=; the storage enforces it on the bytes.
	MaxSize int64
	// MaxRecipients bounds RCPT TO per message (default
	// message.MaxRecipients, as for every door); the addresses together
	// are bounded by message.MaxRecipientBytes.
	MaxRecipients int
	// Deliver stores one message: env is the envelope of the
	// transaction, data the message with line ends normalised to LF and
	// dots unstuffed. It must read data to its end (io.EOF) before
	// storing; an error reading data means the message is incomplete. Its
	// error, if any, is a refusal of the pipeline (an *submit.Error, or
	// what submit.Classify knows), answered with submit.SMTPReply once
	// data is drained.
	Deliver func(env spool.Envelope, data io.Reader) (id string, err error)
	// CheckSender, if set, is the sender policy: a MAIL FROM sender
	// ("<>" for the null sender) it refuses (an *submit.Error with
	// sysexits.NoPerm: 553 5.7.1 and the error's text, by
	// submit.SMTPReply) is counted as failed.
	CheckSender func(sender string) error
}

// maxLine is the longest command line accepted (RFC 5321 says 512; some
// clients send long parameter lists).
const maxLine = 4096

// Serve runs the dialogue until QUIT or the end of the input. It returns
// the number of messages stored, the number refused (at DATA, or at MAIL
// by CheckSender), and an error
// only for a failure to read or write the streams.
func (s *Server) Serve(r io.Reader, w io.Writer) (stored, failed int, err error) {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < maxLine {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	bw := bufio.NewWriter(w)
	maxRcpt := s.MaxRecipients
	if maxRcpt <= 0 {
		maxRcpt = message.MaxRecipients
	}
	reply := func(lines ...string) error {
		for _, l := range lines {
			bw.WriteString(l)
			bw.WriteString("\r\n")
		}
		// Flush only when no further command is already waiting
		// (PIPELINING, RFC 2920).
		if br.Buffered() == 0 {
			return bw.Flush()
		}
		return nil
	}
	flush := func() error { return bw.Flush() }
	if err := reply("220 " + s.Hostname + " ESMTP mailshim"); err != nil {
		return 0, 0, err
	}
	var tr *submit.Transaction
	reset := func() { tr = nil }
	for {
		line, err := readCommand(br)
		if errors.Is(err, errLineTooLong) {
			if err := reply("500 5.5.2 Line too long"); err != nil {
				return stored, failed, err
			}
			continue
		}
		if err != nil {
			flush()
			if err == io.EOF {
				return stored, failed, nil
			}
			return stored, failed, err
		}
		verb, rest, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		var rerr error
		switch verb {
		case "HELO":
			reset()
			rerr = reply("250 " + s.Hostname)
		case "EHLO":
			reset()
			size := "SIZE"
			if s.MaxSize > 0 {
				size += " " + strconv.FormatInt(s.MaxSize, 10)
			}
			ext := []string{s.Hostname, "PIPELINING", size, "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"}
			for i := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				ext[i] = "250" + sep + ext[i]
			}
			rerr = reply(ext...)
		case "MAIL":
			if tr != nil {
				rerr = reply("503 5.5.1 Nested MAIL command")
				break
			}
			t, code := s.mailFrom(rest)
			if code != "" {
				rerr = reply(code)
				break
			}
			if s.CheckSender != nil {
				if err := s.CheckSender(t.Env.Sender); err != nil {
					failed++
					rerr = reply(submit.SMTPReply(err).String())
					break
				}
			}
			tr = t
			rerr = reply("250 2.1.0 Ok")
		case "RCPT":
			if tr == nil {
				rerr = reply("503 5.5.1 Need MAIL command")
				break
			}
			addr, notify, code := rcptTo(rest)
			if code != "" {
				rerr = reply(code)
				break
			}
			if err := tr.Rcpt(addr, notify, maxRcpt); err != nil {
				rerr = reply(submit.SMTPReply(err).String())
				break
			}
			rerr = reply("250 2.1.5 Ok")
		case "DATA":
			if tr == nil || len(tr.Env.Recipients) == 0 {
				rerr = reply("503 5.5.1 Need RCPT command")
				break
			}
			if err := reply("354 End data with <CR><LF>.<CR><LF>"); err != nil {
				return stored, failed, err
			}
			if err := flush(); err != nil {
				return stored, failed, err
			}
			data := message.NewSMTPReader(br)
			id, derr := s.Deliver(tr.Env, data)
			// Drain what Deliver did not read, to stay in step.
			_, cerr := io.Copy(io.Discard, data)
			reset()
			if errors.Is(cerr, message.ErrBareDataEnd) {
				// What follows the smuggled end is the attacker's second
				// transaction: refuse the message and read no further
				// (as Postfix does with a bare LF).
				reply("521 5.5.2 " + s.Hostname + " Error: bare CR or LF next to a \".\" in the message data; message refused, closing")
				return stored, failed + 1, flush()
			}
			if cerr != nil {
				// The input ended inside DATA: nothing stored, nobody to
				// tell.
				return stored, failed + 1, nil
			}
			if derr != nil {
				failed++
				rerr = reply(submit.SMTPReply(derr).String())
				break
			}
			stored++
			rerr = reply("250 2.0.0 Ok: queued as " + id)
		case "RSET":
			reset()
			rerr = reply("250 2.0.0 Ok")
		case "NOOP":
			rerr = reply("250 2.0.0 Ok")
		case "VRFY":
			rerr = reply("252 2.5.2 Cannot VRFY user, but will accept message")
		case "HELP":
			rerr = reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return stored, failed, flush()
		case "STARTTLS", "AUTH", "BDAT", "ETRN", "EXPN", "TURN":
			rerr = reply("502 5.5.1 Command not implemented")
		default:
			rerr = reply("500 5.5.2 Error: command not recognized")
		}
		if rerr != nil {
			return stored, failed, rerr
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readCommand reads one command line without its CRLF (or LF).
func readCommand(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || err == nil && len(line) > maxLine {
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return strings.TrimRight(string(line), "\r"), nil
		}
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// path parses "FROM:<addr> params" / "TO:<addr> params" after the verb.
func path(rest, prefix string) (addr string, params []string, ok bool) {
	if len(rest) < len(prefix) || !strings.EqualFold(rest[:len(prefix)], prefix) {
		return "", nil, false
	}
	rest = strings.TrimLeft(rest[len(prefix):], " ")
	if strings.HasPrefix(rest, "<") {
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return "", nil, false
		}
		addr, rest = rest[1:end], rest[end+1:]
	} else {
		addr, rest, _ = strings.Cut(rest, " ")
	}
	return addr, strings.Fields(rest), true
}

// mailFrom starts a transaction from MAIL FROM's arguments, or returns
// the reply refusing them.
func (s *Server) mailFrom(rest string) (*submit.Transaction, string) {
	addr, params, ok := path(rest, "FROM:")
	if !ok {
		return nil, "501 5.5.4 Syntax: MAIL FROM:<address>"
	}
	t, err := submit.Mail(addr)
	if err != nil {
		return nil, submit.SMTPReply(err).String()
	}
	env := &t.Env
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "SIZE":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, "501 5.5.4 Bad SIZE parameter"
			}
			if s.MaxSize > 0 && n > s.MaxSize {
				return nil, "552 5.3.4 Message size exceeds fixed limit"
			}
		case "BODY":
			b, ok := message.ParseBody(v)
			if !ok {
				return nil, "501 5.5.4 Bad BODY parameter"
			}
			env.BodyType = b
		case "SMTPUTF8":
			env.SMTPUTF8 = true
		case "RET":
			r, ok := message.ParseRet(v)
			if !ok {
				return nil, "501 5.5.4 Bad RET parameter"
			}
			env.Ret = r
		case "ENVID":
			// xtext on the wire, stored decoded.
			id, err := message.DecodeXtext(v)
			if err != nil || !message.ValidEnvID(id) {
				return nil, "501 5.5.4 Bad ENVID parameter"
			}
			env.EnvID = id
		case "AUTH":
			// AUTH=<> and kin: accepted and ignored.
		default:
			return nil, fmt.Sprintf("555 5.5.4 Unsupported parameter %.40q", k)
		}
	}
	return t, ""
}

// rcptTo parses RCPT TO's arguments: the forward path (as given, for
// Transaction.Rcpt) and NOTIFY, or the reply refusing them.
func rcptTo(rest string) (addr, notify, code string) {
	addr, params, ok := path(rest, "TO:")
	if !ok || addr == "" {
		return "", "", "501 5.5.4 Syntax: RCPT TO:<address>"
	}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "NOTIFY":
			var ok bool
			if notify, ok = message.ParseNotify(v); !ok {
				return "", "", "501 5.5.4 Bad NOTIFY parameter"
			}
		case "ORCPT":
			// Accepted and ignored: the spool has no per-recipient ORCPT.
		default:
			return "", "", fmt.Sprintf("555 5.5.4 Unsupported parameter %.40q", k)
		}
	}
	return addr, notify, ""
}
