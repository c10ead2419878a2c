package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// tokenEndpoint is an in-process OAuth2 token endpoint (RFC 6749 section
// 5) that issues access tokens of a given lifetime and remembers them, for
// an upstream that checks the bearer token.
type tokenEndpoint struct {
	*httptest.Server
	mu       sync.Mutex
	expiry   time.Duration
	issued   map[string]time.Time // access token → expiry
	requests []map[string]string  // the form of every request
	refresh  string               // the refresh token currently valid
	rotate   bool                 // issue a new refresh token each time
	fail     string               // when set, answer 400 with this error code
}

func newTokenEndpoint(t *testing.T, expiry time.Duration) *tokenEndpoint {
	te := &tokenEndpoint{expiry: expiry, issued: map[string]time.Time{}, refresh: "1//refresh-0"}
	te.Server = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.Close)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	form := map[string]string{}
	for k := range r.PostForm {
		form[k] = r.PostForm.Get(k)
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	te.requests = append(te.requests, form)
	w.Header().Set("Content-Type", "application/json")
	refuse := func(code, desc string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	switch {
	case te.fail != "":
		refuse(te.fail, "Token has been expired or revoked.")
		return
	case r.Method != http.MethodPost || r.URL.Path != "/token" || form["client_id"] != "client-1":
		refuse("invalid_client", "unknown client")
		return
	case form["grant_type"] == "refresh_token" && (form["refresh_token"] != te.refresh || form["client_secret"] != "client-secret-1"):
		refuse("invalid_grant", "bad refresh token")
		return
	case form["grant_type"] == "client_credentials" && (form["client_secret"] != "client-secret-1" || form["scope"] != "https://outlook.office365.com/.default"):
		refuse("invalid_client", "bad secret or scope")
		return
	case form["grant_type"] != "refresh_token" && form["grant_type"] != "client_credentials":
		refuse("unsupported_grant_type", form["grant_type"])
		return
	}
	tok := fmt.Sprintf("access-%d", len(te.requests))
	te.issued[tok] = time.Now().Add(te.expiry)
	resp := map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(te.expiry / time.Second)}
	if te.rotate && form["grant_type"] == "refresh_token" {
		te.refresh = fmt.Sprintf("1//refresh-%d", len(te.requests))
		resp["refresh_token"] = te.refresh
	}
	json.NewEncoder(w).Encode(resp)
}

// valid reports whether token was issued and has not expired.
func (te *tokenEndpoint) valid(token string) bool {
	te.mu.Lock()
	defer te.mu.Unlock()
	exp, ok := te.issued[token]
	return ok && time.Now().Before(exp)
}

func (te *tokenEndpoint) count() int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return len(te.requests)
}

const oauthUser = "web1@example.com"

// oauthSite is a site whose upstream takes only bearer tokens for
// oauthUser, valid ones from te.
func oauthSite(t *testing.T, te *tokenEndpoint, upstream string) (*site, *smtptest.Server) {
	up := smtptest.New(t, smtptest.Options{Username: oauthUser, Password: "no password works here",
		BearerOK: func(user, token string) bool { return user == oauthUser && te.valid(token) }})
	s := newSite(t, up, siteOpts{})
	os.WriteFile(filepath.Join(s.dir, "client.secret"), []byte("client-secret-1\n"), 0o600)
	os.WriteFile(filepath.Join(s.dir, "refresh.token"), []byte(te.refresh+"\n"), 0o600)
	u := up.Upstream()
	cfg := fmt.Sprintf(`hostname = "web1.example.com"
spool = %q
control_socket = %q
submit_socket = %q
aliases_file = ""

[[upstream]]
host = %q
port = %d
tls = "starttls"
ca_file = %q
username = %q
oauth_token_url = %q
oauth_client_id = "client-1"
oauth_client_secret_file = %q
%s

[queue]
retry = ["1s"]
scan_interval = "1s"

[log]
protocol = true
`, s.spool, s.controlSock(), s.submitSock(), u.Host, u.Port, u.CAFile, oauthUser, te.URL+"/token",
		filepath.Join(s.dir, "client.secret"), upstream)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return s, up
}

// Gmail-style: XOAUTH2 with access tokens from a refresh token, renewed
// before they expire; a rotated refresh token is used and saved.
func TestOAuthRefreshToken(t *testing.T) {
	te := newTokenEndpoint(t, 2*time.Second)
	te.rotate = true
	s, up := oauthSite(t, te, fmt.Sprintf("oauth_flow = \"refresh_token\"\noauth_refresh_token_file = %q\noauth_scopes = [\"https://mail.google.com/\"]",
		"REFRESH"))
	// (the file name goes in after the fact: it lives in s.dir)
	b, _ := os.ReadFile(s.cfgPath)
	os.WriteFile(s.cfgPath, []byte(strings.Replace(string(b), `"REFRESH"`, fmt.Sprintf("%q", filepath.Join(s.dir, "refresh.token")), 1)), 0o644)
	if out, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath); code != 0 || !strings.Contains(out, `oauth_flow = "refresh_token"`) {
		t.Fatalf("check-config: %d\n%s\n%s", code, out, stderr)
	}
	d := s.start()
	s.drop("oauth", 1)
	msgs, err := up.WaitFor(1, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	if msgs[0].User != oauthUser || msgs[0].Mech != "XOAUTH2" {
		t.Errorf("authenticated as %q with %q", msgs[0].User, msgs[0].Mech)
	}
	first := te.requests[0]
	if first["grant_type"] != "refresh_token" || first["refresh_token"] != "1//refresh-0" || first["scope"] != "https://mail.google.com/" {
		t.Errorf("token request %v", first)
	}
	// The token expires; the next session must present a fresh one (the
	// upstream refuses an expired token). The upstream drops the cached
	// session so that the next message authenticates again.
	issued := time.Now()
	waitfor.True(t, "the first token to expire", 10*time.Second, func() bool { return time.Since(issued) > 2*time.Second })
	up.DropAll()
	s.drop("oauth-again", 1)
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	if n := te.count(); n < 2 {
		t.Errorf("%d token requests, want a refresh", n)
	}
	if te.requests[1]["refresh_token"] != "1//refresh-1" {
		t.Errorf("the rotated refresh token was not used: %v", te.requests[1])
	}
	// The rotated refresh token is kept in the spool (the configured file
	// is the administrator's), mode 0600, and used after a restart.
	state, _ := filepath.Glob(filepath.Join(s.spool, "oauth", "*.refresh-token"))
	if len(state) != 1 {
		t.Fatalf("state files %v", state)
	}
	if b, _ := os.ReadFile(state[0]); !strings.HasSuffix(strings.TrimSpace(string(b)), " "+te.refresh) {
		t.Errorf("state file %q, want the rotated %q", b, te.refresh)
	}
	if fi, _ := os.Stat(state[0]); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(s.dir, "refresh.token")); string(b) != "1//refresh-0\n" {
		t.Errorf("the configured file was changed: %q", b)
	}
	d.term(t)
	d = s.start()
	s.drop("oauth-after-restart", 1)
	if _, err := up.WaitFor(3, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	te.mu.Lock()
	last := te.requests[len(te.requests)-1]
	te.mu.Unlock()
	if last["refresh_token"] != "1//refresh-2" {
		t.Errorf("after the restart, refresh token %q sent, want the rotated 1//refresh-2", last["refresh_token"])
	}
	// Not even in the protocol trace ([log] protocol = true), in clear or
	// in the XOAUTH2 initial response's base64.
	l := s.log()
	if !strings.Contains(l, "AUTH XOAUTH2 [redacted]") {
		t.Errorf("no redacted AUTH in the trace:\n%s", l)
	}
	ir := base64.StdEncoding.EncodeToString([]byte("user=" + oauthUser + "\x01auth=Bearer access-1\x01\x01"))
	if strings.Contains(l, "access-") || strings.Contains(l, "refresh-") || strings.Contains(l, "client-secret-1") || strings.Contains(l, ir) {
		t.Errorf("a token or secret in the log:\n%s", l)
	}
	d.term(t)
}

// Microsoft 365 app-only: the client credentials flow, with OAUTHBEARER.
func TestOAuthClientCredentials(t *testing.T) {
	te := newTokenEndpoint(t, time.Hour)
	s, up := oauthSite(t, te, "auth = [\"OAUTHBEARER\"]\noauth_flow = \"client_credentials\"\noauth_scopes = [\"https://outlook.office365.com/.default\"]")
	d := s.start()
	s.drop("app-only", 2)
	msgs, err := up.WaitFor(2, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	if msgs[0].Mech != "OAUTHBEARER" || msgs[0].User != oauthUser {
		t.Errorf("authenticated as %q with %q", msgs[0].User, msgs[0].Mech)
	}
	if te.requests[0]["grant_type"] != "client_credentials" {
		t.Errorf("token request %v", te.requests[0])
	}
	// relayd doctor authenticates the same way.
	out, _, _ := s.doctor("--upstream", "1")
	if !strings.Contains(out, "AUTH OAUTHBEARER as "+oauthUser+" accepted (token from "+te.URL+"/token") {
		t.Errorf("doctor:\n%s", out)
	}
	d.term(t)
}

// A token endpoint that refuses (400 invalid_grant) is an authentication
// failure: logged with the cause and fix on every attempt, the mail stays
// queued, nothing is bounced; once the endpoint issues tokens again, it is
// delivered without a restart.
func TestOAuthTokenFailure(t *testing.T) {
	te := newTokenEndpoint(t, time.Hour)
	te.fail = "invalid_grant"
	s, up := oauthSite(t, te, fmt.Sprintf("oauth_flow = \"refresh_token\"\noauth_refresh_token_file = %q", "REFRESH"))
	b, _ := os.ReadFile(s.cfgPath)
	os.WriteFile(s.cfgPath, []byte(strings.Replace(string(b), `"REFRESH"`, fmt.Sprintf("%q", filepath.Join(s.dir, "refresh.token")), 1)), 0o644)
	d := s.start()
	ids := s.drop("revoked", 1)
	waitfor.True(t, "two failed attempts", 30*time.Second, func() bool { return strings.Count(s.log(), "event=deferred id="+ids[0]) >= 2 })
	l := s.log()
	var line string
	for _, ln := range strings.Split(l, "\n") {
		if strings.Contains(ln, "event=auth-failed") {
			line = ln
		}
	}
	for _, want := range []string{"invalid_grant", "refresh token", "fix=", filepath.Join(s.dir, "refresh.token")} {
		if !strings.Contains(line, want) {
			t.Errorf("auth-failed line lacks %q: %q\n%s", want, line, l)
		}
	}
	if strings.Contains(l, "event=bounced") || strings.Contains(l, "status=bounced") || up.Count() != 0 {
		t.Fatalf("bounced or sent:\n%s", l)
	}
	if got := s.leftovers(); len(got) != 1 || !strings.HasSuffix(got[0], " "+ids[0]) { // still queued, alone
		t.Errorf("spool: %v", got)
	}
	te.mu.Lock()
	te.fail = ""
	te.mu.Unlock()
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("not delivered once the endpoint recovered: %v\n%s", err, s.log())
	}
	for _, m := range up.Messages() {
		if m.From == "" {
			t.Errorf("a DSN was sent: %s", m.Data)
		}
	}
	d.term(t)
}

// An access token the provider revoked before its expiry (a password
// change, an admin's "sign out everywhere") is refused by the upstream:
// the next login fetches a new token instead of presenting the refused
// one again until its announced expiry, an hour later.
func TestOAuthRevokedTokenReplaced(t *testing.T) {
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
		t.Run(mech, func(t *testing.T) { testOAuthRevokedTokenReplaced(t, mech) })
	}
}

func testOAuthRevokedTokenReplaced(t *testing.T, mech string) {
	te := newTokenEndpoint(t, time.Hour)
	s, up := oauthSite(t, te, "auth = [\""+mech+"\"]\noauth_flow = \"client_credentials\"\noauth_scopes = [\"https://outlook.office365.com/.default\"]")
	d := s.start()
	s.drop("before-revocation", 1)
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	// The provider revokes every token it issued; the upstream closes
	// the session, so the next message logs in again.
	te.mu.Lock()
	clear(te.issued)
	te.mu.Unlock()
	up.DropAll()
	s.drop("after-revocation", 1)
	if _, err := up.WaitFor(2, 20*time.Second); err != nil {
		t.Fatalf("not delivered after the token was revoked (%d token requests): %v\n%s", te.count(), err, s.logTail(3000))
	}
	if n := te.count(); n != 2 {
		t.Errorf("%d token requests, want 2 (the first token, one after its refusal)", n)
	}
	d.term(t)
}

// The token endpoint fails while the access token in hand is about to be
// replaced (inside RefreshMargin) but still valid: the refresh fails, the
// old token is used until it expires, and the mail goes.
func TestOAuthEndpointDownTokenStillValid(t *testing.T) {
	te := newTokenEndpoint(t, 24*time.Second) // replaced 12 s before it expires
	s, up := oauthSite(t, te, "auth = [\"XOAUTH2\"]\noauth_flow = \"client_credentials\"\noauth_scopes = [\"https://outlook.office365.com/.default\"]")
	d := s.start()
	s.drop("before", 1)
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	issued := time.Now()
	waitfor.True(t, "the token's refresh margin", 20*time.Second, func() bool { return time.Since(issued) > 13*time.Second })
	te.mu.Lock()
	te.fail = "temporarily_unavailable"
	te.mu.Unlock()
	up.DropAll()
	s.drop("endpoint-down", 1)
	if _, err := up.WaitFor(2, 6*time.Second); err != nil {
		t.Fatalf("not delivered with the token still valid while the endpoint fails: %v\n%s", err, s.logTail(3000))
	}
	if !strings.Contains(s.log(), "temporarily_unavailable") {
		t.Errorf("the failed refresh is not logged:\n%s", s.logTail(3000))
	}
	d.term(t)
}
