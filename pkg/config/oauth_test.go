package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestOAuthUpstream(t *testing.T) {
	dir := t.TempDir()
	secret, refresh := filepath.Join(dir, "client.secret"), filepath.Join(dir, "refresh.token")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	os.WriteFile(refresh, []byte("1//refresh\n"), 0o644)
	conf := `[[upstream]]
host = "smtp.gmail.com"
username = "web1@example.com"
oauth_flow = "refresh_token"
oauth_token_url = "https://oauth2.googleapis.com/token"
oauth_client_id = "123.apps.googleusercontent.com"
oauth_client_secret_file = "` + secret + `"
oauth_refresh_token_file = "` + refresh + `"
oauth_scopes = ["https://mail.google.com/"]
`
	c, err := Parse("t.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	if !reflect.DeepEqual(u.Auth, []string{"XOAUTH2", "OAUTHBEARER"}) || u.Port != 587 || u.OAuthScopes[0] != "https://mail.google.com/" {
		t.Errorf("%+v", u)
	}
	again, err := Parse("t.conf", []byte(c.Redacted()))
	if err != nil || again.Redacted() != c.Redacted() {
		t.Fatalf("Redacted round trip: %v\n%s", err, c.Redacted())
	}
	// The refresh token file follows password_file's rules.
	err = c.LoadSecrets()
	if err == nil || !strings.Contains(err.Error(), "t.conf:8: upstream.oauth_refresh_token_file: ") || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("LoadSecrets: %v", err)
	}
	os.Chmod(refresh, 0o600)
	if err := c.LoadSecrets(); err != nil {
		t.Error(err)
	}
}
