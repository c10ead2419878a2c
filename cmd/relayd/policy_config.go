package main

import (
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/policy"
)

// policyRules builds the policy's rule tables from [policy]: each key a
// table sets becomes a rule field, the others stay nil (the next table
// decides).
func policyRules(cfg *config.Config) *policy.Policy {
	p := &policy.Policy{Rules: map[string]policy.Rule{}}
	for k, a := range cfg.Policy.Accounts {
		var r policy.Rule
		if a.Set["from_domains"] {
			r.FromDomains = append([]string{}, a.FromDomains...)
		}
		if a.Set["max_recipients"] {
			n := a.MaxRecipients
			r.MaxRecipients = &n
		}
		if a.Set["max_size"] {
			n := a.MaxSize
			r.MaxSize = &n
		}
		for i, n := range [policy.NumRates]int{a.MessagesPerMinute, a.MessagesPerHour, a.MessagesPerDay,
			a.RecipientsPerMinute, a.RecipientsPerHour, a.RecipientsPerDay} {
			if a.Set[policy.Rate(i).String()] {
				n := n
				r.Rates[i] = &n
			}
		}
		if a.Set["action"] {
			act := policy.Action(a.Action)
			r.Action = &act
		}
		if a.Set["max_held"] {
			n := a.MaxHeld
			r.MaxHeld = &n
		}
		if a.Set["max_quarantined"] {
			n := a.MaxQuarantined
			r.MaxQuarantined = &n
		}
		p.Rules[k] = r
	}
	return p
}

// noticeTo is where the admin notice goes ("" for none).
func noticeTo(cfg *config.Config) string { return cfg.Policy.NoticeTo }
