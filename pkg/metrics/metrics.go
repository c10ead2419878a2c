// Package metrics is relayd's Prometheus endpoint ([metrics], off by
// default): what the mail log says, counted.
//
// The counters follow the mail log (maillog.Logger's observer), not the
// code paths that write it: every number on the endpoint is the count of
// some event= line, so a graph and a grep never disagree, and the queue
// and pickup need no counting code of their own. Queue depth is read from
// the spool at each scrape.
//
// The account label is bounded: the accounts the policy names, plus the
// top_accounts busiest others (chosen at scrape time by what they have
// sent, and kept once chosen, so that a series never moves); every other
// account is "other". Counters only grow: an account that gets a label of
// its own after its counts were served under "other" (the policy names it
// on a reload) leaves what it had there, and its own series counts from
// then on; an account that had its own label keeps it (a reload that
// drops its [policy] table does not move its counts into "other").
//
// Its Go API is not stable.
package metrics

import (
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Names of the metrics (the README lists them; tests and the Grafana
// dashboard use these).
const (
	QueueMessages    = "mailshim_queue_messages"
	PickedUp         = "mailshim_picked_up_total"
	Deliveries       = "mailshim_deliveries_total"
	Held             = "mailshim_held_total"
	PolicyActions    = "mailshim_policy_actions_total"
	PolicyTrips      = "mailshim_policy_trips_total"
	UpstreamErrors   = "mailshim_upstream_errors_total"
	DeliveryLatency  = "mailshim_delivery_latency_seconds"
	PickupLag        = "mailshim_pickup_lag_seconds"
	BuildInfo        = "mailshim_build_info"
	OtherAccount     = "other"
	defaultTopAccts  = 20
	maxTrackedAccts  = 10000
	untrackedAccount = "\x00untracked"
)

// Names lists every metric name the endpoint serves.
var Names = []string{QueueMessages, PickedUp, Deliveries, Held, PolicyActions, PolicyTrips, UpstreamErrors, DeliveryLatency, PickupLag, BuildInfo}

// Options configure the metrics.
type Options struct {
	// Named are accounts that always have their own label (the policy's).
	Named []string
	// TopAccounts is how many other accounts get their own label (by
	// volume); 0 means 20.
	TopAccounts int
	// QueueDepth returns the number of messages in each queue state, read
	// at each scrape (nil: the metric is not served).
	QueueDepth func() map[string]int
	// Account returns the account (user name, else uid:N) of a queued
	// message whose pickup this process did not see (queued before a
	// restart); nil or false: "unknown".
	Account func(id string) (string, bool)
}

// Metrics holds the counters. It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry
	opt Options

	mu       sync.Mutex
	named    map[string]bool
	chosen   map[string]bool  // accounts with their own label, besides named
	labelled map[string]bool  // accounts ever served under their own label
	inOther  map[string]bool  // accounts ever served under "other"
	volume   map[string]int64 // messages picked up per account (for top N)
	ids      idAccounts
	acctVecs []*acctVec

	pickedUp, deliveries, held, policyActions, policyTrips *acctVec

	upstreamErrors *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	lag            prometheus.Histogram
}

// New returns the metrics with their registry.
func New(opt Options) *Metrics {
	if opt.TopAccounts <= 0 {
		opt.TopAccounts = defaultTopAccts
	}
	m := &Metrics{reg: prometheus.NewRegistry(), opt: opt, chosen: map[string]bool{}, labelled: map[string]bool{}, inOther: map[string]bool{},
		volume: map[string]int64{}}
	m.SetNamed(opt.Named)
	m.pickedUp = m.newAcctVec(PickedUp, "Messages picked up into the queue (every door), by account and door (via).", "via")
	m.deliveries = m.newAcctVec(Deliveries, "Delivery outcomes per recipient and attempt (the mail log's event=delivery), by status (sent, deferred, bounced, failed), upstream and account.", "status", "upstream")
	m.held = m.newAcctVec(Held, "Messages put in the held queue, by account and reason (a policy limit, frozen, or admin).", "reason")
	m.policyActions = m.newAcctVec(PolicyActions, "Messages the per-account policy did not simply accept, by account, action (hold, defer, refuse) and limit.", "action", "limit")
	m.policyTrips = m.newAcctVec(PolicyTrips, "Episodes of an account tripping a limit (one admin notice each), by account and limit.", "limit")
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: UpstreamErrors,
		Help: "Recipients an upstream did not accept, by upstream, class (temporary, permanent, auth) and stage (connect, tls, ehlo, auth, mail, rcpt, data, ...)."},
		[]string{"upstream", "class", "stage"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: DeliveryLatency,
		Help:    "Time from a message's arrival (sendmail's clock) to its acceptance by the upstream, per recipient sent, by upstream.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}},
		[]string{"upstream"})
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{Name: PickupLag,
		Help:    "Time from a message's arrival (sendmail's clock) to its pickup into the queue.",
		Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300}})
	m.reg.MustRegister(m.upstreamErrors, m.latency, m.lag, &acctCollector{m}, buildInfo())
	if opt.QueueDepth != nil {
		m.reg.MustRegister(&depthCollector{desc: prometheus.NewDesc(QueueMessages,
			"Messages in the queue, by state (incoming, active, deferred, held, failed, quarantine), read from the spool at each scrape.",
			[]string{"state"}, nil), f: opt.QueueDepth})
	}
	return m
}

// SetNamed replaces the accounts that always have their own label (on
// reload).
func (m *Metrics) SetNamed(names []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.named = map[string]bool{}
	for _, n := range names {
		m.named[n] = true
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is the registry the metrics are in (for tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Version is the release, set by the Makefile (-ldflags -X, from
// packaging/VERSION) for the binaries it builds, the packages' included;
// empty in other builds, which report Go's module version instead.
var Version string

func buildInfo() prometheus.Collector {
	version, revision := "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	if Version != "" {
		version = Version
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: BuildInfo, Help: "Always 1; the labels say which relayd this is.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()}})
	g.Set(1)
	return g
}

// accountOf is the account of an event that names uid and user.
func accountOf(e *maillog.Entry) string {
	if u := e.Str("user"); u != "" {
		return u
	}
	if uid := e.Str("uid"); uid != "" {
		return "uid:" + uid
	}
	return "unknown"
}

// accountOfID is the account of queued message id.
func (m *Metrics) accountOfID(id string) string {
	return m.ids.of(id, func(id string) (string, bool) {
		if m.opt.Account == nil {
			return "", false
		}
		acct, ok := m.opt.Account(id)
		if ok {
			// Queued before this process started: the account is a
			// candidate for a label of its own (choose), as if it had
			// been seen at pickup, so that a free label is not left
			// unused while its backlog counts under "other".
			m.mu.Lock()
			if _, seen := m.volume[acct]; !seen && len(m.volume) < maxTrackedAccts {
				m.volume[acct] = 0
			}
			m.mu.Unlock()
		}
		return acct, ok
	})
}

// idAccounts is the account of each queued message, as the metrics and
// the stats follow the mail log: learnt at its pickup, forgotten when it
// leaves the queue; for a message queued before this process started,
// asked of the queue once (lookup), else "unknown".
type idAccounts struct {
	mu  sync.Mutex
	ids map[string]string
}

func (a *idAccounts) learn(id, acct string) {
	a.mu.Lock()
	if a.ids == nil {
		a.ids = map[string]string{}
	}
	a.ids[id] = acct
	a.mu.Unlock()
}

func (a *idAccounts) forget(id string) {
	a.mu.Lock()
	delete(a.ids, id)
	a.mu.Unlock()
}

func (a *idAccounts) of(id string, lookup func(id string) (string, bool)) string {
	a.mu.Lock()
	acct, ok := a.ids[id]
	a.mu.Unlock()
	if ok {
		return acct
	}
	if lookup != nil {
		if acct, ok := lookup(id); ok {
			a.learn(id, acct)
			return acct
		}
	}
	return "unknown"
}

// Observe counts one mail log event (maillog.Logger.SetObserver).
func (m *Metrics) Observe(e *maillog.Entry) {
	t := e.Time
	switch e.Event {
	case "pickup":
		id, acct := e.Str("id"), accountOf(e)
		m.ids.learn(id, acct)
		m.mu.Lock()
		if _, ok := m.volume[acct]; ok || len(m.volume) < maxTrackedAccts {
			m.volume[acct]++
		}
		m.mu.Unlock()
		m.pickedUp.add(acct, 1, e.Str("via"))
		if at, ok := spool.IDTime(id); ok {
			m.lag.Observe(max(t.Sub(at).Seconds(), 0))
		}
	case "delivery":
		id, status, upstream := e.Str("id"), e.Str("status"), e.Str("upstream")
		if e.Str("tried") == "no" {
			// A recipient of a message that was not sent at all (its
			// upstream failed on another message, or its breaker held
			// it): no attempt and no upstream's answer. Only a final
			// outcome (bounced at the end of the lifetime) counts.
			if status != "deferred" {
				m.deliveries.add(m.accountOfID(id), 1, status, upstream)
			}
			return
		}
		acct := m.accountOfID(id)
		m.deliveries.add(acct, 1, status, upstream)
		switch status {
		case "sent":
			if at, ok := spool.IDTime(id); ok {
				m.latency.WithLabelValues(upstream).Observe(max(t.Sub(at).Seconds(), 0))
			}
		case "deferred", "bounced", "failed":
			class := "temporary"
			stage := e.Str("stage")
			switch {
			case status != "deferred" && e.Str("reason") != "lifetime exceeded":
				class = "permanent"
			case stage == "auth":
				class = "auth"
			}
			if stage == "" {
				stage = "unknown"
			}
			m.upstreamErrors.WithLabelValues(upstream, class, stage).Inc()
		}
	case "policy":
		acct := accountOf(e)
		action, limit := e.Str("action"), e.Str("limit")
		m.policyActions.add(acct, 1, action, limit)
		if action == "hold" {
			m.held.add(acct, 1, limit)
		}
	case "limit-tripped":
		m.policyTrips.add(e.Str("account"), 1, e.Str("limit"))
	case "hold":
		m.held.add(m.accountOfID(e.Str("id")), 1, "admin")
	case "removed", "delete":
		m.ids.forget(e.Str("id"))
	}
}

// label returns the account label for acct (under m.mu).
func (m *Metrics) label(acct string) string {
	if m.named[acct] || m.chosen[acct] || m.labelled[acct] {
		return acct
	}
	return OtherAccount
}

// choose gives the busiest accounts without a label of their own one,
// while fewer than TopAccounts have one (under m.mu).
func (m *Metrics) choose() {
	free := m.opt.TopAccounts - len(m.chosen)
	if free <= 0 {
		return
	}
	var cand []string
	for a := range m.volume {
		if !m.named[a] && !m.chosen[a] {
			cand = append(cand, a)
		}
	}
	sort.Slice(cand, func(i, j int) bool {
		if m.volume[cand[i]] != m.volume[cand[j]] {
			return m.volume[cand[i]] > m.volume[cand[j]]
		}
		return cand[i] < cand[j]
	})
	for _, a := range cand[:min(free, len(cand))] {
		m.chosen[a] = true
	}
}

// acctVec is a counter with an account label whose values are folded
// into the bounded label set at each scrape.
type acctVec struct {
	desc   *prometheus.Desc
	labels int
	mu     sync.Mutex
	// by account, then by the other labels' values joined with \x00.
	data map[string]map[string]float64
	// base is, by account and labels as data, what an account had when
	// it moved from "other" to its own label: it stays in "other".
	base map[string]map[string]float64
}

func (m *Metrics) newAcctVec(name, help string, labels ...string) *acctVec {
	v := &acctVec{desc: prometheus.NewDesc(name, help, append([]string{"account"}, labels...), nil), labels: len(labels),
		data: map[string]map[string]float64{}, base: map[string]map[string]float64{}}
	m.acctVecs = append(m.acctVecs, v)
	return v
}

func (v *acctVec) add(acct string, n float64, lvs ...string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.data[acct]
	if d == nil {
		if len(v.data) >= maxTrackedAccts {
			acct = untrackedAccount
			d = v.data[acct]
		}
		if d == nil {
			d = map[string]float64{}
			v.data[acct] = d
		}
	}
	d[strings.Join(lvs, "\x00")] += n
}

// acctCollector emits the acctVecs with bounded account labels.
type acctCollector struct{ m *Metrics }

func (c *acctCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.m.acctVecs {
		ch <- v.desc
	}
}

func (c *acctCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	m.choose()
	labelOf := map[string]string{}
	for _, v := range m.acctVecs {
		v.mu.Lock()
		for a := range v.data {
			if _, ok := labelOf[a]; !ok {
				labelOf[a] = m.label(a)
			}
		}
		v.mu.Unlock()
	}
	for a, l := range labelOf {
		switch {
		case l == OtherAccount || a == untrackedAccount:
			m.inOther[a] = true
		case m.inOther[a]:
			// Served under "other" until now: that stays there.
			delete(m.inOther, a)
			for _, v := range m.acctVecs {
				v.mu.Lock()
				if d := v.data[a]; d != nil {
					b := map[string]float64{}
					for k, n := range d {
						b[k] = n
					}
					v.base[a] = b
				}
				v.mu.Unlock()
			}
			fallthrough
		default:
			m.labelled[a] = true
		}
	}
	m.mu.Unlock()
	for _, v := range m.acctVecs {
		sums := map[string]float64{}
		v.mu.Lock()
		for a, d := range v.data {
			l := labelOf[a]
			if l == "" {
				l = OtherAccount
			}
			b := v.base[a]
			for k, n := range d {
				if l != OtherAccount && b[k] > 0 {
					sums[OtherAccount+"\x00"+k] += b[k]
					n -= b[k]
				}
				sums[l+"\x00"+k] += n
			}
		}
		v.mu.Unlock()
		for k, n := range sums {
			lvs := strings.Split(k, "\x00")
			if len(lvs) != v.labels+1 {
				continue
			}
			ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, n, lvs...)
		}
	}
}

// depthCollector reads the queue depth at each scrape.
type depthCollector struct {
	desc *prometheus.Desc
	f    func() map[string]int
}

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	for state, n := range c.f() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// CountDir returns the number of entries in dir (0 when it cannot be read).
func CountDir(dir string) int {
	f, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(4096)
		n += len(names)
		if err != nil {
			return n
		}
	}
}
