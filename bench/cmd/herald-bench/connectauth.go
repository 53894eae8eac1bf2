package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/pkg/broker"
)

// The connect-auth scenario: what deciding who may connect costs. One
// Herald (cmd/embedded) serves four names, one per connect mode:
//
//	bench-open     open: no check (the baseline)
//	bench-token    token: an HS256 token in ?token= (one signature check per connection)
//	bench-backend  backend: one NATS request per connection to a Go backend in this process
//	bench-cached   backend, with answers the backend lets edges cache (warmed up first)
//
// Each round connects -subs clients to each name in turn, measures the
// connect rate, the per-connection latency (dial to pode.open) and the
// server's CPU, and closes them; rounds repeat the A/B so that the noise
// of a shared machine shows.

// connectAuthModes are the measured modes, in the order each round runs them.
var connectAuthModes = []struct{ label, name string }{
	{"open", "bench-open"},
	{"token", "bench-token"},
	{"backend", "bench-backend"},
	{"backend+cache", "bench-cached"},
}

const benchTokenSecret = "herald-bench-token-secret-0123456789"

// ConnectAuthResult is one mode's connect round.
type ConnectAuthResult struct {
	Mode    string         `json:"mode"`
	Round   int            `json:"round"`
	Connect *ConnectResult `json:"connect"`
	// ServerCPU is the server's CPU time during the round, in seconds.
	ServerCPU float64 `json:"server_cpu_seconds"`
	// ServerCPUPerConn is ServerCPU per opened connection, in microseconds.
	ServerCPUPerConn float64 `json:"server_cpu_us_per_conn"`
}

func (b *bench) connectAuth(ctx context.Context, res *Result) error {
	s, err := b.startHerald(ctx, false, "", "", nil,
		"-connect-auth", "bench-open=open,bench-token=token,bench-backend=backend,bench-cached=backend",
		"-token-secret", benchTokenSecret)
	if err != nil {
		return err
	}
	t := &target{label: "herald cmd/embedded (edge + NATS in one process), Go auth backend in the load process",
		servers: []*load.Server{s}, edges: []*load.Server{s}}
	defer func() {
		if serr := t.stop(); serr != nil {
			b.logf("server stop: %v", serr)
		}
	}()
	res.Target = t.label

	nc, err := nats.Connect(s.NATS, nats.Name("herald-bench auth backend"))
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := broker.ServeAuth(nc, "", "*", func(r broker.AuthRequest) broker.AuthAnswer {
		ans := broker.AuthAnswer{Allow: true, Subject: r.ClientID}
		if r.Name == "bench-cached" {
			ans.Cache = &broker.AuthCache{TTL: 300}
		}
		return ans
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return err
	}

	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "bench", "exp": time.Now().Add(time.Hour).Unix(),
		"herald": map[string]any{"names": []string{"bench-token"}, "clientId": "*"},
	}).SignedString([]byte(benchTokenSecret))
	if err != nil {
		return err
	}
	n := b.cfg.Subs[0]
	round := func(label, name string, record int) error {
		u := s.URL + "/sse/" + url.PathEscape(name) + "?clientId={client}"
		if name == "bench-token" {
			u += "&token=" + url.QueryEscape(token)
		}
		f, err := load.NewFleet(load.FleetConfig{PerProcess: b.cfg.PerProcess, Stderr: b.log,
			Pool: load.PoolConfig{N: n, Endpoint: load.Endpoint{URL: u, OpenEvent: "pode.open"}, Concurrency: b.cfg.Concurrency}})
		if err != nil {
			return err
		}
		defer f.Close()
		u0, _ := s.Usage()
		what := fmt.Sprintf("%s round %d", label, record)
		if record == 0 {
			what = label + " warm-up"
		}
		cr, err := b.connect(ctx, f, b.cfg.Concurrency, false, what)
		if err != nil {
			return err
		}
		u1, _ := s.Usage()
		if cr.Failed > 0 {
			res.OK = false
		}
		if record > 0 {
			r := &ConnectAuthResult{Mode: label, Round: record, Connect: cr, ServerCPU: (u1.CPU - u0.CPU).Seconds()}
			if cr.Opened > 0 {
				r.ServerCPUPerConn = r.ServerCPU / float64(cr.Opened) * 1e6
			}
			res.ConnectAuth = append(res.ConnectAuth, r)
		}
		return nil
	}
	if err := round("backend+cache", "bench-cached", 0); err != nil {
		return err
	}
	for r := 1; r <= b.cfg.Rounds; r++ {
		for _, m := range connectAuthModes {
			if err := round(m.label, m.name, r); err != nil {
				return err
			}
			sleep(ctx, time.Second) // the closed connections leave
		}
	}
	return t.crashed()
}

// printConnectAuth prints the connect-auth rounds.
func printConnectAuth(w io.Writer, rs []*ConnectAuthResult) {
	fmt.Fprintln(w, "\nmode\tround\topened\tfailed\tper second\tp50 ms\tp99 ms\tserver CPU s\tserver CPU/conn")
	for _, r := range rs {
		c := r.Connect
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\t%.1f\t%.1f\t%.2f\t%.0f µs\n", r.Mode, r.Round, c.Opened, c.Failed,
			rateH(c.PerSecond), c.Latency.P50, c.Latency.P99, r.ServerCPU, r.ServerCPUPerConn)
	}
}
