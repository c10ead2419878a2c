// Package oauth gets OAuth2 access tokens for smarthosts that no longer
// take passwords (Gmail, Microsoft 365) and the SASL clients that present
// them: XOAUTH2 (Google's and Microsoft's) and OAUTHBEARER (RFC 7628).
//
// Two flows, with golang.org/x/oauth2:
//
//   - "refresh_token" (Gmail, Microsoft 365 delegated): a refresh token,
//     obtained once by the administrator with the provider's consent
//     screen, is exchanged for short-lived access tokens;
//   - "client_credentials" (Microsoft 365 app-only): the application's
//     client ID and secret alone get the token.
//
// The client secret and the refresh token live in files readable by
// relayd's user only, read with the checks of config.ReadSecret (the
// password_file rules). A Source caches its access token and fetches a new
// one before the old expires (RefreshMargin), so a session never starts
// with a token about to lapse (keeping the old one while it is valid when
// that refresh fails), and forgets it when an upstream refuses it
// (revoked before its expiry), so the next login asks for a new one. When
// the provider rotates the refresh token
// (Microsoft does on every use) the new one is used from then on and kept
// in a state file of relayd's own (Options.StateFile, in the spool: the
// configuration directory is read-only to relayd), together with a hash
// of the configured token it replaced; at the next start the state file
// wins while the configured file still holds that token, and an
// administrator's new token in the configured file wins over it.
//
// A failure to get a token is a *relay.Error of class AuthFailure: loud on
// every attempt, and never a reason to bounce mail (the queue defers it).
//
// Its Go API is not stable.
package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/statefile"
)

// Flows.
const (
	FlowRefreshToken      = "refresh_token"
	FlowClientCredentials = "client_credentials"
)

// Options configure one Source (the oauth_* keys of an [[upstream]]).
type Options struct {
	Flow             string // FlowRefreshToken or FlowClientCredentials
	TokenURL         string // the provider's token endpoint
	ClientID         string // the application (client) ID
	ClientSecretFile string // optional for refresh_token (Gmail's installed apps have one too)
	RefreshTokenFile string // refresh_token flow only
	// StateFile keeps a rotated refresh token across restarts ("": in
	// memory only).
	StateFile string
	Scopes    []string // e.g. https://outlook.office365.com/.default
	// HTTPClient is used for the token endpoint (nil: one with a 30 s
	// timeout).
	HTTPClient *http.Client
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Warn receives a warning that is not a failure (a rotated refresh
	// token that could not be saved); nil drops it.
	Warn func(msg string, err error)
}

// Source hands out access tokens for one upstream account.
type Source struct {
	o            Options
	clientSecret string

	mu      sync.Mutex
	refresh string        // the refresh token in use
	origin  string        // hash of the configured refresh token
	tok     *oauth2.Token // cached access token, nil if none
	got     time.Time     // when tok was fetched (Options.Now)
	expiry  time.Time     // when it expires (Options.Now's time)
}

// New checks o and reads its secret files.
func New(o Options) (*Source, error) {
	if o.TokenURL == "" {
		return nil, errors.New("oauth_token_url is not set")
	}
	if o.ClientID == "" {
		return nil, errors.New("oauth_client_id is not set")
	}
	s := &Source{o: o}
	if s.o.HTTPClient == nil {
		s.o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if s.o.Now == nil {
		s.o.Now = time.Now
	}
	var err error
	if o.ClientSecretFile != "" {
		if s.clientSecret, err = config.ReadSecret(o.ClientSecretFile); err != nil {
			return nil, err
		}
	}
	switch o.Flow {
	case FlowRefreshToken:
		if o.RefreshTokenFile == "" {
			return nil, errors.New(`oauth_flow = "refresh_token" needs oauth_refresh_token_file`)
		}
		if s.refresh, err = config.ReadSecret(o.RefreshTokenFile); err != nil {
			return nil, err
		}
		s.origin = hash(s.refresh)
		if rotated, ok := readState(o.StateFile, s.origin); ok {
			s.refresh = rotated
		}
	case FlowClientCredentials:
		if s.clientSecret == "" {
			return nil, errors.New(`oauth_flow = "client_credentials" needs oauth_client_secret_file`)
		}
	default:
		return nil, fmt.Errorf("oauth_flow %q: must be %q or %q", o.Flow, FlowRefreshToken, FlowClientCredentials)
	}
	return s, nil
}

// RefreshMargin is how long before its expiry an access token is replaced:
// five minutes, or half its lifetime when that is shorter.
func RefreshMargin(lifetime time.Duration) time.Duration {
	if m := lifetime / 2; m < 5*time.Minute {
		return m
	}
	return 5 * time.Minute
}

// Token returns a valid access token, from the cache or from the token
// endpoint. Its error is a *relay.Error of class AuthFailure.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	if s.tok != nil {
		if s.expiry.Sub(now) > RefreshMargin(s.expiry.Sub(s.got)) {
			return s.tok.AccessToken, nil
		}
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.o.HTTPClient)
	cc := clientcredentials.Config{ClientID: s.o.ClientID, ClientSecret: s.clientSecret, TokenURL: s.o.TokenURL, Scopes: s.o.Scopes,
		AuthStyle: oauth2.AuthStyleInParams}
	if s.o.Flow == FlowRefreshToken {
		// The refresh grant (RFC 6749 section 6) through clientcredentials,
		// whose EndpointParams may replace grant_type: unlike
		// oauth2.Config's refresh it sends the scopes, which Microsoft's
		// v2.0 endpoint asks for. One request per call; the cache is ours.
		cc.EndpointParams = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.refresh}}
	}
	tok, err := cc.Token(ctx)
	if err == nil && tok.AccessToken == "" {
		err = errors.New("the token endpoint answered without an access_token")
	}
	if err != nil {
		if s.tok != nil && now.Before(s.expiry) {
			// An early refresh failed, but the token in hand is still
			// valid: use it until it expires (an outage of the token
			// endpoint must not stop the mail while it lasts), and say
			// so; the next session tries the endpoint again.
			if s.o.Warn != nil {
				s.o.Warn("cannot renew the OAuth2 access token at "+s.o.TokenURL+"; relayd uses the current one until it expires at "+s.expiry.UTC().Format(time.RFC3339), err)
			}
			return s.tok.AccessToken, nil
		}
		s.tok = nil
		return "", s.failure(err)
	}
	// x/oauth2 dates the expiry with the system clock. A token without
	// expires_in is taken to live an hour (Google's and Microsoft's
	// do), so that it is never kept for ever.
	s.tok, s.got, s.expiry = tok, now, now.Add(time.Hour)
	if !tok.Expiry.IsZero() {
		s.expiry = now.Add(time.Until(tok.Expiry))
	}
	if s.o.Flow == FlowRefreshToken && tok.RefreshToken != "" && tok.RefreshToken != s.refresh {
		s.refresh = tok.RefreshToken
		if s.o.StateFile != "" {
			if err := writeState(s.o.StateFile, s.origin, tok.RefreshToken); err != nil && s.o.Warn != nil {
				s.o.Warn("the token endpoint issued a new refresh token, which relayd uses from now on but could not save to "+
					s.o.StateFile+"; after a restart relayd uses "+s.o.RefreshTokenFile+" again", err)
			}
		}
	}
	return tok.AccessToken, nil
}

// Forget drops the cached access token if it is token (one the upstream
// refused), so that the next Token asks the token endpoint.
func (s *Source) Forget(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken == token {
		s.tok = nil
	}
}

// failure turns a token endpoint failure into an AuthFailure with the
// cause and the fix in plain words.
func (s *Source) failure(err error) *relay.Error {
	e := &relay.Error{Class: relay.AuthFailure, Stage: relay.StageAuth, Err: err}
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
		e.Cause = "the OAuth2 token endpoint " + s.o.TokenURL + " refused the refresh token (invalid_grant" + desc(re) + "): it was revoked, expired, or issued for another client"
		e.Fix = "get a new refresh token for client " + s.o.ClientID + " (the provider's consent flow) and write it to " + s.o.RefreshTokenFile + ", then reload relayd"
		if s.o.Flow == FlowClientCredentials {
			e.Cause = "the OAuth2 token endpoint " + s.o.TokenURL + " refused the grant (invalid_grant" + desc(re) + ")"
			e.Fix = "check oauth_scopes and the application's permissions at the provider"
		}
	case errors.As(err, &re) && (re.ErrorCode == "invalid_client" || re.ErrorCode == "unauthorized_client"):
		e.Cause = "the OAuth2 token endpoint " + s.o.TokenURL + " refused the client (" + re.ErrorCode + desc(re) + ")"
		e.Fix = "check oauth_client_id and the secret in oauth_client_secret_file (client secrets expire at Microsoft)"
	case errors.As(err, &re):
		code := re.ErrorCode
		if code == "" && re.Response != nil {
			code = re.Response.Status
		}
		e.Cause = "the OAuth2 token endpoint " + s.o.TokenURL + " refused to issue an access token (" + code + desc(re) + ")"
		e.Fix = "check oauth_token_url, oauth_client_id, oauth_scopes and the files of this upstream"
	default:
		e.Cause = "cannot get an OAuth2 access token from " + s.o.TokenURL + ": " + err.Error()
		e.Fix = "check that relayd can reach the token endpoint (DNS, firewall, proxy) and oauth_token_url"
	}
	return e
}

func desc(re *oauth2.RetrieveError) string {
	if re.ErrorDescription == "" {
		return ""
	}
	d := strings.NewReplacer("\r", " ", "\n", " ").Replace(re.ErrorDescription)
	if len(d) > 200 {
		d = d[:200] + "..."
	}
	return ": " + d
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// readState returns the rotated refresh token kept in path for the
// configured token whose hash is origin: the file holds "<origin>
// <token>". A missing, foreign or unsafe file is ignored.
func readState(path, origin string) (string, bool) {
	if path == "" {
		return "", false
	}
	v, err := config.ReadSecret(path)
	if err != nil {
		return "", false
	}
	o, tok, ok := strings.Cut(v, " ")
	if !ok || o != origin || tok == "" {
		return "", false
	}
	return tok, true
}

// writeState records token as the successor of the configured token whose
// hash is origin (statefile.Write, mode 0600: fsync'd, renamed over path,
// the directory fsync'd), so that a crash never leaves half a token nor
// loses one the provider has already replaced.
func writeState(path, origin, token string) error {
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return statefile.Write(path, []byte(origin+" "+token+"\n"), statefile.Options{Perm: 0o600})
}
