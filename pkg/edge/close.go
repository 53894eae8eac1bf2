package edge

// CloseReason says why the server closed a connection. Every close path
// uses one of the reasons below; the table is published in README.md.
type CloseReason struct {
	// Code is the stable, machine-readable reason, used as a metric label.
	Code string
	// WSCode is the WebSocket close code for the reason.
	WSCode int
	// Reconnect tells a client whether reconnecting (and resuming) makes sense.
	Reconnect bool
	// Graceful reasons flush what is queued and send pode.close first;
	// others close the socket at once (nothing more can be written).
	Graceful bool
}

// The close reasons.
var (
	// ReasonShutdown: the edge is shutting down or draining; reconnect elsewhere.
	ReasonShutdown = CloseReason{Code: "shutdown", WSCode: 1012, Reconnect: true, Graceful: true}
	// ReasonClosed: a producer closed the connection (Herald-Control: close).
	ReasonClosed = CloseReason{Code: "closed", WSCode: 1000, Reconnect: false, Graceful: true}
	// ReasonReplaced: a newer connection with the same name and clientId arrived.
	ReasonReplaced = CloseReason{Code: "replaced", WSCode: 1008, Reconnect: false, Graceful: true}
	// ReasonSlow: the client did not keep up (queue overflow or write timeout).
	ReasonSlow = CloseReason{Code: "slow", WSCode: 1013, Reconnect: true, Graceful: false}
	// ReasonPolicy: the client broke a rule (origin, rate, message format).
	ReasonPolicy = CloseReason{Code: "policy", WSCode: 1008, Reconnect: false, Graceful: true}
	// ReasonTooBig: the client sent a message over the read limit.
	ReasonTooBig = CloseReason{Code: "too_big", WSCode: 1009, Reconnect: false, Graceful: true}
	// ReasonProtocol: the client broke the WebSocket protocol (an unmasked
	// or malformed frame, a bad close code).
	ReasonProtocol = CloseReason{Code: "protocol", WSCode: 1002, Reconnect: false, Graceful: true}
	// ReasonBadData: the client sent a text message that is not valid UTF-8.
	ReasonBadData = CloseReason{Code: "bad_data", WSCode: 1007, Reconnect: false, Graceful: true}
	// ReasonGone: the client went away (read or write failed).
	ReasonGone = CloseReason{Code: "gone", WSCode: 1001, Reconnect: true, Graceful: false}
	// ReasonInternal: an unexpected server error.
	ReasonInternal = CloseReason{Code: "internal", WSCode: 1011, Reconnect: true, Graceful: true}
)

// CloseReasons lists every reason, for metrics pre-initialisation and docs.
var CloseReasons = []CloseReason{
	ReasonShutdown, ReasonClosed, ReasonReplaced, ReasonSlow,
	ReasonPolicy, ReasonTooBig, ReasonBadData, ReasonProtocol, ReasonGone, ReasonInternal,
}
