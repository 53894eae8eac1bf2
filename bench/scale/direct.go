package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Replay methods.
const (
	// methodHistory is broker.History.Replay: an ordered consumer on a
	// replicated stream, batched direct gets on one replica.
	methodHistory = "history"
	// methodDirect is batched direct gets on any stream, answered by
	// whichever replica takes the request. pkg/broker does not use them
	// on a replicated stream (a lagging follower could answer short);
	// the bench measures what they would cost there.
	methodDirect = "direct"
)

// directGet is a batched direct get request ($JS.API.DIRECT.GET.<stream>),
// as pkg/broker sends it.
type directGet struct {
	Seq     uint64 `json:"seq"`
	Batch   int    `json:"batch"`
	NextFor string `json:"next_by_subj"`
}

// replayDirectAny reads, subject by subject, every stored message from
// from to upTo with batched direct gets of 256 and calls fn for each (in
// each subject's order; the cost to the servers is what it measures).
func replayDirectAny(ctx context.Context, nc *nats.Conn, stream string, from, upTo uint64, subjects []string, fn func(seq uint64, subject string) error) error {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256+8)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, subject := range subjects {
		next := from
	batches:
		for next <= upTo {
			body, _ := json.Marshal(directGet{Seq: next, Batch: 256, NextFor: subject})
			if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
				return err
			}
			timeout := time.NewTimer(5 * time.Second)
			for {
				var m *nats.Msg
				select {
				case m = <-ch:
				case <-ctx.Done():
					timeout.Stop()
					return ctx.Err()
				case <-timeout.C:
					return errors.New("direct get: no answer")
				}
				switch status := m.Header.Get("Status"); status {
				case "":
				case "404":
					timeout.Stop()
					break batches
				case "204":
					timeout.Stop()
					if np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); np == 0 {
						break batches
					}
					continue batches
				default:
					timeout.Stop()
					return fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
				}
				seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
				if err != nil || seq < next {
					timeout.Stop()
					return fmt.Errorf("direct get: bad sequence %q", m.Header.Get("Nats-Sequence"))
				}
				next = seq + 1
				if seq > upTo {
					continue // the rest of the batch is past the bound
				}
				if err := fn(seq, m.Header.Get("Nats-Subject")); err != nil {
					timeout.Stop()
					return err
				}
			}
		}
	}
	return nil
}
