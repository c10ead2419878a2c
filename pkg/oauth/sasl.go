package oauth

import (
	"context"
	"path/filepath"
	"strings"
	"sync"

	"github.com/emersion/go-sasl"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/relay"
)

// XOAuth2 is the name of Google's and Microsoft's bearer token mechanism.
const XOAuth2 = "XOAUTH2"

// xoauth2Client is the client side of XOAUTH2: one initial response,
// "user=<user>^Aauth=Bearer <token>^A^A". A server that refuses the token
// sends a challenge (base64 JSON with the reason), which the client
// answers with an empty response; the server then fails the command
// (535), and that reply is the error.
type xoauth2Client struct{ user, token string }

// NewXOAuth2Client returns an XOAUTH2 client presenting token for user.
func NewXOAuth2Client(user, token string) sasl.Client {
	return &xoauth2Client{user: user, token: token}
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return XOAuth2, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	return []byte{}, nil
}

// Clients is relay.Options.SASL for a configuration: the bearer token
// mechanisms of each upstream, with a Source per upstream that has an
// oauth_flow (made on first use and kept, so its token cache lives as long
// as the Clients) and the password_file token for one that has none.
type Clients struct {
	// Options is the template of every Source (HTTP client, clock, Warn);
	// the oauth_* keys come from the upstream.
	Options Options
	// StateDir holds each account's rotated refresh token ("": none
	// kept across restarts).
	StateDir string

	mu      sync.Mutex
	sources map[string]*Source
}

// key names an upstream's OAuth account: the same settings share a Source.
func key(up config.Upstream) string {
	return strings.Join([]string{up.Username, up.OAuthFlow, up.OAuthTokenURL, up.OAuthClientID,
		up.OAuthClientSecretFile, up.OAuthRefreshTokenFile, strings.Join(up.OAuthScopes, " ")}, "\x00")
}

// Source returns the token source of up (nil when it has no oauth_flow).
func (cs *Clients) Source(up config.Upstream) (*Source, error) {
	if up.OAuthFlow == "" {
		return nil, nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	k := key(up)
	if s := cs.sources[k]; s != nil {
		return s, nil
	}
	o := cs.Options
	o.Flow, o.TokenURL, o.ClientID, o.Scopes = up.OAuthFlow, up.OAuthTokenURL, up.OAuthClientID, up.OAuthScopes
	o.ClientSecretFile, o.RefreshTokenFile = up.OAuthClientSecretFile, up.OAuthRefreshTokenFile
	if cs.StateDir != "" && up.OAuthFlow == FlowRefreshToken {
		o.StateFile = filepath.Join(cs.StateDir, hash(k)[:32]+".refresh-token")
	}
	s, err := New(o)
	if err != nil {
		// Not kept: the next session reads the files again, so a fix
		// takes effect without a reload.
		return nil, &relay.Error{Class: relay.AuthFailure, Stage: relay.StageAuth, Err: err,
			Cause: "the OAuth2 settings of this upstream cannot be used: " + err.Error(),
			Fix:   "check the oauth_* keys and their files (relayd check-config)"}
	}
	if cs.sources == nil {
		cs.sources = map[string]*Source{}
	}
	cs.sources[k] = s
	return s, nil
}

// Client returns the SASL client of mech for up: XOAUTH2 or OAUTHBEARER
// with a token from up's Source, or, without oauth_flow, XOAUTH2 with the
// password_file content as the token; nil for every other case (the
// relay's built-in clients). A token that cannot be had is a
// *relay.Error of class AuthFailure.
func (cs *Clients) Client(ctx context.Context, up config.Upstream, mech string) (sasl.Client, error) {
	if mech != XOAuth2 && mech != sasl.OAuthBearer {
		return nil, nil
	}
	src, err := cs.Source(up)
	if err != nil {
		return nil, err
	}
	token := up.Password
	if src != nil {
		if token, err = src.Token(ctx); err != nil {
			return nil, err
		}
	} else if mech == sasl.OAuthBearer {
		return nil, nil
	}
	var c sasl.Client
	if mech == XOAuth2 {
		c = NewXOAuth2Client(up.Username, token)
	} else {
		c = sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: up.Username, Token: token, Host: up.Host, Port: up.Port})
	}
	if src != nil {
		return &sourcedClient{Client: c, src: src, token: token}, nil
	}
	return c, nil
}

// sourcedClient is a bearer token client whose token came from a Source:
// when the upstream refuses the token (relay.Refusable), the Source
// forgets it, so that the next login presents a new one. A token revoked
// before its expiry (a password change, a revoked consent) would
// otherwise be presented again until then, and the mail would wait.
type sourcedClient struct {
	sasl.Client
	src   *Source
	token string
}

func (c *sourcedClient) Refused() { c.src.Forget(c.token) }
