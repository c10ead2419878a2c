package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/sockdiag"
	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/spool"
)

// newMetrics builds the metrics for cfg (nil when [metrics] listen is
// empty) and opens their listener. Queue depth is read from the queue (in
// memory) at each scrape; the account of a message the metrics did not
// see picked up is asked of the queue (account: queue.Queue.AccountOf).
func newMetrics(cfg *config.Config, sq *spool.Queue, account func(id string) (string, bool), named []string) (*metrics.Metrics, net.Listener, error) {
	if cfg.Metrics.Listen == "" {
		return nil, nil, nil
	}
	root := cfg.Spool
	m := metrics.New(metrics.Options{
		Named:       named,
		TopAccounts: cfg.Metrics.TopAccounts,
		QueueDepth: func() map[string]int {
			out := sq.Counts()
			out["quarantine"] = metrics.CountDir(filepath.Join(root, spool.DirQuarantine))
			return out
		},
		Account: account,
	})
	var ln net.Listener
	var err error
	if strings.HasPrefix(cfg.Metrics.Listen, "/") {
		ln, err = sockserve.Listen(cfg.Metrics.Listen, 0o660)
	} else {
		ln, err = net.Listen("tcp", cfg.Metrics.Listen)
	}
	if err != nil {
		return nil, nil, err
	}
	return m, ln, nil
}

// serveMetrics serves m on ln until ctx is done. On TCP only the users
// the Unix socket's mode lets in are served (metricsReader): every local
// user reaches the loopback, and the metrics name the accounts and count
// each one's mail, which is not another customer's business on a shared
// host.
func serveMetrics(ctx context.Context, m *metrics.Metrics, ln net.Listener, log *maillog.Logger) {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	if _, tcp := ln.Addr().(*net.TCPAddr); tcp {
		srv.ConnContext = metricsPeer
		srv.Handler = metricsGate(srv.Handler)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics endpoint", err)
	}
}

// metricsPeerKey is the context key of a TCP metrics connection's
// client: its UID, or the error that kept it unknown (metricsPeer).
type metricsPeerKey struct{}

type metricsClient struct {
	uid int
	err error
}

// metricsPeer looks up, once per connection, the UID that owns the
// client's socket in the kernel's socket table (as the SMTP listener
// does: sockdiag.TCPOwner).
func metricsPeer(ctx context.Context, c net.Conn) context.Context {
	cl := metricsClient{uid: -1}
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	la, lok := c.LocalAddr().(*net.TCPAddr)
	if !rok || !lok {
		cl.err = errors.New("not a TCP connection")
	} else if o, err := sockdiag.TCPOwner(ra.AddrPort(), la.AddrPort()); err != nil {
		cl.err = err
	} else {
		cl.uid = int(o.UID)
	}
	return context.WithValue(ctx, metricsPeerKey{}, cl)
}

// metricsGate serves next to the clients metricsReader admits and
// answers 403 to every other.
func metricsGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cl, _ := r.Context().Value(metricsPeerKey{}).(metricsClient)
		switch {
		case cl.err != nil:
			http.Error(w, "relayd: the metrics are for root, relayd's user and the members of its group; the owner of this connection is unknown: "+cl.err.Error(), http.StatusForbidden)
		case !metricsReader(cl.uid):
			http.Error(w, fmt.Sprintf("relayd: the metrics are for root, relayd's user and the members of its group (gid %d), not uid %d: they name every account on the host", os.Getgid(), cl.uid), http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// metricsReader reports whether uid may read the metrics: root, relayd's
// user, or a user whose groups (the group database's) include relayd's
// group — those whom the Unix socket's mode (0660, relayd's group) lets
// connect, so that both endpoints admit the same users (a Prometheus run
// as its own user: add it to the group).
func metricsReader(uid int) bool {
	if uid < 0 {
		return false
	}
	if sockserve.Admin(uid) {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return false
	}
	gid := strconv.Itoa(os.Getgid())
	if u.Gid == gid {
		return true
	}
	ids, err := u.GroupIds()
	return err == nil && slices.Contains(ids, gid)
}

// statsFile is the name of the stats state file in relayd's queue
// directory.
const statsFile = "stats.state"

// openStats loads relayd stats' state (a damaged file is logged and set
// aside); account names the account of a message it did not see picked up
// (queue.Queue.AccountOf).
func openStats(cfg *config.Config, account func(id string) (string, bool), log *maillog.Logger) (*metrics.Stats, error) {
	st, err := metrics.OpenStats(filepath.Join(cfg.Spool, spool.DirQueue, statsFile), nil)
	if st == nil {
		return nil, err
	}
	if err != nil {
		log.Warning("stats state", err)
	}
	st.Account = account
	return st, nil
}

// namedAccounts are the accounts the policy names, as the metrics label
// them: a "uid:N" table's UID by its user name when it has one (the label
// of an account is its user name, else uid:N).
func namedAccounts(p *policy.Policy) []string {
	var out []string
	for _, k := range p.Named() {
		if n, ok := strings.CutPrefix(k, "uid:"); ok {
			if u, err := user.LookupId(n); err == nil {
				k = u.Username
			}
		}
		out = append(out, k)
	}
	return out
}
