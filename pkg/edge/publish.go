package edge

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/herald-push/herald/pkg/broker"
)

// publishItem is one event of a POST /publish body.
type publishItem struct {
	Name     string          `json:"name"`
	AllNames bool            `json:"allNames"`
	Group    json.RawMessage `json:"group"`
	ClientID json.RawMessage `json:"clientId"`
	ID       string          `json:"id"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	Close    bool            `json:"close"`
}

// stringList reads a field that may be a JSON string or an array of
// strings. An absent field narrows nothing; a field that is present must
// narrow: null, "" and [] are refused, so that a producer's empty variable
// never widens a send to everyone.
func stringList(field string, raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return nil, nil
	case bytes.Equal(raw, []byte("null")):
		return nil, fmt.Errorf("%s: null; omit the field to send to every %s", field, field)
	}
	if raw[0] == '"' {
		var one string
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, fmt.Errorf("%s: %v", field, err)
		}
		if one == "" {
			return nil, fmt.Errorf("%s: empty; omit the field to send to every %s", field, field)
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("%s: want a string or an array of strings", field)
	}
	if len(many) == 0 {
		return nil, fmt.Errorf("%s: empty array; omit the field to send to every %s", field, field)
	}
	return many, nil
}

// handlePublish is POST /publish: one event object or an array of them.
// All are checked before any is published.
func (e *Edge) handlePublish(w http.ResponseWriter, r *http.Request) {
	if len(e.cfg.PublishTokens) == 0 {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "publish with POST", http.StatusMethodNotAllowed)
		return
	}
	if !e.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		e.publishError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(e.cfg.MaxPublishBytes)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			e.publishError(w, http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("body larger than %d bytes", e.cfg.MaxPublishBytes))
			return
		}
		e.publishError(w, http.StatusBadRequest, "bad_request", "could not read body")
		return
	}
	items, err := decodePublish(body)
	if err != nil {
		e.publishError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}

	sends := make([]*broker.Prepared, 0, len(items))
	for i, it := range items {
		send, err := e.prepare(it)
		if err != nil {
			status, code := publishStatus(err)
			e.publishError(w, status, code, itemErr(len(items), i, err.Error()))
			return
		}
		sends = append(sends, send)
	}
	if e.hist != nil {
		// A history stream that has not answered for seconds (no quorum,
		// NATS unreachable) would hold the request for the whole flush
		// timeout, only to fail: say so at once. Nothing was handed over.
		if err := e.hist.Ready(); err != nil {
			e.publishError(w, http.StatusServiceUnavailable, "unavailable", "history stream unavailable: "+err.Error())
			return
		}
	}
	total, err := e.pub.Send(r.Context(), sends...)
	if err != nil {
		status, code := publishStatus(err)
		e.publishErrorCount(w, status, code, err.Error(), total)
		return
	}
	e.m.publishes.WithLabelValues("ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = fmt.Fprintf(w, "{\"published\":%d}\n", total)
}

// prepare checks one item of a /publish body and prepares its send: the
// one validation of its fields and the one computation of its subjects.
func (e *Edge) prepare(it publishItem) (*broker.Prepared, error) {
	groups, err := stringList("group", it.Group)
	if err != nil {
		return nil, badItem(err)
	}
	clientIDs, err := stringList("clientId", it.ClientID)
	if err != nil {
		return nil, badItem(err)
	}
	target := broker.Target{Name: it.Name, AllNames: it.AllNames, Groups: groups, ClientIDs: clientIDs}
	if it.Close {
		return e.pub.PrepareClose(target)
	}
	if len(it.Data) == 0 {
		return nil, badItem(errors.New("data: required"))
	}
	return e.pub.Prepare(target, broker.Event{ID: it.ID, Type: it.Event, Data: eventData(it.Data)})
}

// badItem is an item that is not even well-formed for the broker to check.
func badItem(err error) error { return &broker.Error{Code: broker.CodeInvalid, Err: err} }

// publishStatuses maps the broker's error codes to the HTTP status and the
// result code of a /publish answer (also the metric label).
var publishStatuses = map[broker.ErrorCode]struct {
	status int
	code   string
}{
	broker.CodeInvalid:        {http.StatusBadRequest, "bad_request"},
	broker.CodeBroadcastLevel: {http.StatusUnprocessableEntity, "broadcast_level"},
	broker.CodeTooLarge:       {http.StatusRequestEntityTooLarge, "too_large"},
	broker.CodeUnavailable:    {http.StatusServiceUnavailable, "unavailable"},
	broker.CodeUnknown:        {http.StatusGatewayTimeout, "unknown"},
}

// publishStatus is the answer to a failed publish.
func publishStatus(err error) (int, string) {
	var be *broker.Error
	if errors.As(err, &be) {
		if s, ok := publishStatuses[be.Code]; ok {
			return s.status, s.code
		}
	}
	return http.StatusServiceUnavailable, "unavailable"
}

// decodePublish parses one object or an array of objects, rejecting
// unknown fields.
func decodePublish(body []byte) ([]publishItem, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("empty body: want a JSON object or array")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var items []publishItem
	if body[0] == '[' {
		if err := dec.Decode(&items); err != nil {
			return nil, fmt.Errorf("malformed JSON: %v", err)
		}
		if len(items) == 0 {
			return nil, errors.New("empty array")
		}
	} else {
		var one publishItem
		if err := dec.Decode(&one); err != nil {
			return nil, fmt.Errorf("malformed JSON: %v", err)
		}
		items = []publishItem{one}
	}
	if dec.More() {
		return nil, errors.New("malformed JSON: trailing data after the value")
	}
	return items, nil
}

// eventData turns the "data" field into the event's bytes: a JSON string
// is sent as its text, any other value as compact JSON.
func eventData(raw json.RawMessage) []byte {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return []byte(s)
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func itemErr(n, i int, msg string) string {
	if n == 1 {
		return msg
	}
	return fmt.Sprintf("item %d: %s", i, msg)
}

// authorized checks the bearer token in constant time against each token.
func (e *Edge) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	tok = strings.TrimSpace(tok)
	match := 0
	for _, t := range e.cfg.PublishTokens {
		match |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
	}
	return match == 1
}

func (e *Edge) publishError(w http.ResponseWriter, status int, code, msg string) {
	e.publishErrorCount(w, status, code, msg, -1)
}

// publishErrorCount answers a failed publish with JSON {"error","code"} and,
// when some messages went out before the failure, "published".
func (e *Edge) publishErrorCount(w http.ResponseWriter, status int, code, msg string, published int) {
	e.m.publishes.WithLabelValues(code).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	out := map[string]any{"error": msg, "code": code}
	if published >= 0 {
		out["published"] = published
	}
	_ = json.NewEncoder(w).Encode(out)
}
