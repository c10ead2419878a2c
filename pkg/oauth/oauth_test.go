package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/relay"
)

func endpoint(t *testing.T, expiresIn int, status int) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if status != 200 {
			w.WriteHeader(status)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`)
			return
		}
		fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":%d}`, k, expiresIn)
	}))
	t.Cleanup(ts.Close)
	return ts, &n
}

func secretFile(t *testing.T, value string, mode os.FileMode) string {
	p := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(p, []byte(value+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	return p
}

// An access token is reused until RefreshMargin before its expiry, then
// replaced, before it lapses.
func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	ts, n := endpoint(t, 600, 200)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := New(Options{Flow: FlowClientCredentials, TokenURL: ts.URL, ClientID: "c", ClientSecretFile: secretFile(t, "sec", 0o600),
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	get := func() string {
		tok, err := s.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if tok := get(); tok != "tok-1" {
		t.Fatal(tok)
	}
	now = now.Add(4*time.Minute + 59*time.Second) // 5m01s left: cached
	if tok := get(); tok != "tok-1" || n.Load() != 1 {
		t.Errorf("token %s after %d requests, want the cached one", tok, n.Load())
	}
	now = now.Add(2 * time.Second) // 4m59s left: within the margin
	if tok := get(); tok != "tok-2" {
		t.Errorf("token %s, want a new one before expiry", tok)
	}
	if RefreshMargin(10*time.Second) != 5*time.Second || RefreshMargin(time.Hour) != 5*time.Minute {
		t.Error("RefreshMargin")
	}
}

// A refusal is an AuthFailure with the cause and the fix.
func TestTokenFailureIsAuthFailure(t *testing.T) {
	ts, _ := endpoint(t, 600, 401)
	s, err := New(Options{Flow: FlowClientCredentials, TokenURL: ts.URL, ClientID: "c", ClientSecretFile: secretFile(t, "sec", 0o600)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Token(context.Background())
	var re *relay.Error
	if !errors.As(err, &re) || re.Class != relay.AuthFailure || !strings.Contains(re.Cause, "invalid_client") || !strings.Contains(re.Fix, "oauth_client_secret_file") {
		t.Fatalf("%#v", err)
	}
}

// The secret files follow password_file's rules.
func TestSecretFileModes(t *testing.T) {
	_, err := New(Options{Flow: FlowRefreshToken, TokenURL: "https://t.example/token", ClientID: "c", RefreshTokenFile: secretFile(t, "r", 0o640)})
	if err == nil || !strings.Contains(err.Error(), "mode 0640") {
		t.Errorf("group-readable refresh token: %v", err)
	}
	_, err = New(Options{Flow: FlowClientCredentials, TokenURL: "https://t.example/token", ClientID: "c"})
	if err == nil {
		t.Error("client_credentials without a secret accepted")
	}
}

func TestXOAuth2Client(t *testing.T) {
	mech, ir, err := NewXOAuth2Client("u@example.com", "ya29.tok").Start()
	if mech != "XOAUTH2" || string(ir) != "user=u@example.com\x01auth=Bearer ya29.tok\x01\x01" || err != nil {
		t.Errorf("%s %q %v", mech, ir, err)
	}
}

// A rotated refresh token in the state file is used while the configured
// file still holds the token it replaced; a new token written there by the
// administrator wins.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state", "x.refresh-token")
	cfgFile := secretFile(t, "configured-1", 0o600)
	o := Options{Flow: FlowRefreshToken, TokenURL: "https://t.example/token", ClientID: "c", RefreshTokenFile: cfgFile, StateFile: state}
	if err := writeState(state, hash("configured-1"), "rotated-1"); err != nil {
		t.Fatal(err)
	}
	s, err := New(o)
	if err != nil || s.refresh != "rotated-1" {
		t.Fatalf("%v %q", err, s.refresh)
	}
	os.WriteFile(cfgFile, []byte("configured-2\n"), 0o600)
	if s, err = New(o); err != nil || s.refresh != "configured-2" {
		t.Fatalf("%v %q", err, s.refresh)
	}
}
