package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/policy"
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

// serveMetrics serves m on ln until ctx is done.
func serveMetrics(ctx context.Context, m *metrics.Metrics, ln net.Listener, log *maillog.Logger) {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
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
