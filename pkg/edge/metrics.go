package edge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/pkg/broker"
)

// metrics are the edge's Prometheus metrics, registered on the injected
// registerer. Label values are pre-initialised so dashboards show zeros.
type metrics struct {
	connections    *prometheus.GaugeVec   // by transport
	connects       *prometheus.CounterVec // by transport
	disconnects    *prometheus.CounterVec // by reason code
	rejections     *prometheus.CounterVec // refused connection attempts, by reason
	wsInbound      *prometheus.CounterVec // WebSocket client messages, by result
	wsEcho         *prometheus.CounterVec // client messages re-sent by the edge (Pode's echo), by result
	received       prometheus.Counter     // NATS messages received
	deliveries     prometheus.Counter     // frames queued to connections
	dropped        *prometheus.CounterVec // NATS messages not delivered, by reason
	publishes      *prometheus.CounterVec // POST /publish requests, by result
	slowConsumers  prometheus.Counter     // NATS slow-consumer events on the edge's subscriptions
	subscriptions  prometheus.GaugeFunc
	resyncs        *prometheus.CounterVec // replays from history, by cause
	gaps           *prometheus.CounterVec // herald.gap events sent, by reason
	poolWrites     *prometheus.CounterVec // the writer pool's socket writes, by outcome
	wsTextRepaired prometheus.Counter     // events sent to WebSocket clients with invalid UTF-8 replaced

	// Who may connect (auth.go, local.go).
	auth             *prometheus.CounterVec // connect decisions of token and backend modes, by mode and result
	authCache        *prometheus.CounterVec // backend decisions looked up in the cache, by result (hit, miss)
	local            *prometheus.CounterVec // Local streams ended, by how
	presenceRequests *prometheus.CounterVec // presence HTTP requests and Pode.Web closes, by kind (presence.go)
	keptIDs          *prometheus.CounterVec // reconnects that asked to keep their clientId, by result (sticky.go)
}

// registerPresenceGauges registers the gauges read from the edge's
// presence: the other edges it knows, and those it watches with a
// complete mirror (it publishes their connections' disconnects if they die).
func registerPresenceGauges(reg prometheus.Registerer, members, watched func() float64) error {
	const ns, sub = "herald", "edge"
	return registerAll(reg,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "presence_members", Help: "Other edges this edge has heard from within -presence-lost-after."}, members),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "presence_watched", Help: "Edges this edge watches with a complete mirror of their connections: it publishes their disconnects (edge_lost) if they die."}, watched))
}

var (
	transportLabels = []string{"sse_h1", "sse_h2", "ws"}
	rejectLabels    = []string{"bad_request", "not_acceptable", "method", "forbidden", "unavailable", "internal", "origin", "upgrade_required",
		refusalLabel(refuseRate), refusalLabel(refuseConnections), refusalLabel(refusePerIP),
		refuseAuthMissing, refuseAuthInvalid, refuseAuthExpired, refuseAuthForbidden, refuseAuthDenied, refuseAuthUnavailable}
	dropLabels      = []string{broker.RejectBadSubject, "broadcast_level", "too_large", broker.RejectBadControl, broker.RejectNoSequence}
	resyncLabels    = []string{causeResume, causeGap, causeReconnect, causeSlowConsumer}
	gapLabels       = []string{gapExpired, gapMalformed, gapEpoch}
	publishLabels   = []string{"ok", "bad_request", "unauthorized", "too_large", "broadcast_level", "unavailable", "unknown"}
	poolWriteLabels = []string{writeDone, writeHandoff}
	presenceLabels  = []string{"lookup", "list", "check", "close", "close_refused", "close_failed"}
	keptIDLabels    = []string{keptOK, keptRefused}
)

// Outcomes of the writer pool's non-blocking writes.
const (
	writeDone    = "done"    // the socket took everything
	writeHandoff = "handoff" // the socket was full: the connection's writer goroutine writes the rest
)

func newMetrics(reg prometheus.Registerer, subs func() float64) (*metrics, error) {
	const ns, sub = "herald", "edge"
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "connections", Help: "Open client connections."}, []string{"transport"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connects_total", Help: "Accepted client connections."}, []string{"transport"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "disconnects_total", Help: "Closed client connections, by close reason."}, []string{"reason"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rejections_total", Help: "Refused connection attempts, by reason."}, []string{"reason"}),
		wsInbound: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ws_inbound_total", Help: "Messages WebSocket clients sent, by result."}, []string{"result"}),
		wsEcho: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ws_echo_total", Help: "Client messages the edge re-sent (Pode's default echo), by result."}, []string{"result"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_received_total", Help: "NATS messages received by the fan-out."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "deliveries_total", Help: "Frames queued to client connections."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "dropped_total", Help: "NATS messages not delivered to any connection, by reason."}, []string{"reason"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "publish_requests_total", Help: "POST /publish requests, by result."}, []string{"result"}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "nats_slow_consumer_total", Help: "Times the edge's NATS subscriptions fell behind and NATS dropped messages."}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "resync_total", Help: "Connections replayed from history, by cause."}, []string{"cause"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "gap_events_total", Help: "herald.gap events sent to clients, by reason."}, []string{"reason"}),
		poolWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "pool_writes_total", Help: "Non-blocking socket writes by the fan-out's writer pool: done (the socket took everything) or handoff (the rest went to the connection's writer goroutine: a slow or distant client)."}, []string{"outcome"}),
		wsTextRepaired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ws_text_repaired_total", Help: "Events whose data was not valid UTF-8, sent to WebSocket clients with U+FFFD in place of the invalid bytes (text frames must be UTF-8)."}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "auth_decisions_total", Help: "Connect decisions of names in token and backend mode, by mode and result."}, []string{"mode", "result"}),
		authCache: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "auth_cache_total", Help: "Backend connect decisions looked up in the edge's cache, by result."}, []string{"result"}),
		local: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "local_streams_total", Help: "Local streams ended, by how: ended (the backend's end marker), no_responders, stalled, invalid (a reply that does not decode), closed (the connection ended first)."}, []string{"result"}),
		subscriptions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "subscriptions", Help: "NATS subjects the edge is subscribed to."}, subs),
		presenceRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "presence_requests_total", Help: "Presence requests over HTTP (lookup, list, check) and Pode.Web sse-close requests (close, close_refused by the identity check, close_failed), by kind."}, []string{"kind"}),
		keptIDs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "kept_client_ids_total", Help: "Reconnects whose Last-Event-ID claimed their previous clientId: kept, or refused (the proof did not verify: a new clientId was assigned)."}, []string{"result"}),
	}
	for _, l := range transportLabels {
		m.connections.WithLabelValues(l)
		m.connects.WithLabelValues(l)
	}
	for _, r := range CloseReasons {
		m.disconnects.WithLabelValues(r.Code)
	}
	for _, l := range rejectLabels {
		m.rejections.WithLabelValues(l)
	}
	for _, l := range wsInboundResults {
		m.wsInbound.WithLabelValues(l)
	}
	for _, l := range wsEchoResults {
		m.wsEcho.WithLabelValues(l)
	}
	for _, l := range presenceLabels {
		m.presenceRequests.WithLabelValues(l)
	}
	for _, l := range keptIDLabels {
		m.keptIDs.WithLabelValues(l)
	}
	if err := registerAll(reg, m.wsInbound, m.wsEcho, m.presenceRequests, m.keptIDs); err != nil {
		return nil, err
	}
	for _, l := range dropLabels {
		m.dropped.WithLabelValues(l)
	}
	for _, l := range resyncLabels {
		m.resyncs.WithLabelValues(l)
	}
	for _, l := range gapLabels {
		m.gaps.WithLabelValues(l)
	}
	for _, l := range publishLabels {
		m.publishes.WithLabelValues(l)
	}
	for _, l := range poolWriteLabels {
		m.poolWrites.WithLabelValues(l)
	}
	for mode, results := range authResults {
		for _, r := range results {
			m.auth.WithLabelValues(mode, r)
		}
	}
	for _, l := range []string{authCacheHit, authCacheMiss} {
		m.authCache.WithLabelValues(l)
	}
	for _, l := range localResults {
		m.local.WithLabelValues(l)
	}
	if err := registerAll(reg, m.auth, m.authCache, m.local); err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{m.connections, m.connects, m.disconnects, m.rejections,
		m.received, m.deliveries, m.dropped, m.publishes, m.slowConsumers, m.subscriptions, m.resyncs, m.gaps, m.poolWrites, m.wsTextRepaired} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// registerAll registers every collector, stopping at the first error.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
