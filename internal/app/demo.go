package app

import (
	"cmp"
	"crypto/sha256"
	_ "embed" // the demo page
	"encoding/base64"
	"html"
	"net/http"
	"strings"

	"github.com/herald-push/herald/pkg/edge"
)

// The demo page's defaults, which README's walkthrough publishes to: its
// SSE and WebSocket clients connect to DemoName in group DemoGroup, and its
// SSE client listens for DemoEventTypes besides message and pode.*. The
// name is a path because a WebSocket's name is its URL path (Pode's model):
// ws://host/ws/demo is "/demo", and the SSE client of the same name opens
// /sse/%2Fdemo. cmd/embedded turns Pode's echo on for DemoName unless
// -ws-echo is set, so what one tab sends reaches every tab.
const (
	DemoName       = "/demo"
	DemoGroup      = "admins"
	DemoEventTypes = "Date"
)

//go:embed demo.html
var demoHTML string

// DemoConfig is what the demo page connects to.
type DemoConfig struct {
	// SSEPath is the edge's SSE route pattern (edge.Config.SSEPath).
	// Default edge.DefaultSSEPath.
	SSEPath string
	// WSEcho lists the names whose WebSocket messages the edge re-sends
	// (edge.Config.WSEchoNames), so the page can say whether its message
	// box reaches other clients. Default none.
	WSEcho []string
	// TaskRoutes are the async routes ("POST /process-data") the task
	// panel offers, and TaskPath where it stops tasks
	// (edge.Config.TaskRoutes, TaskPath). Default none: the panel says how
	// to declare one.
	TaskRoutes []string
	TaskPath   string
}

// DemoHandler serves the demo page with the SSE route pattern ssePath and
// no WebSocket echo: NewDemoHandler(DemoConfig{SSEPath: ssePath}).
func DemoHandler(ssePath string) http.Handler {
	return NewDemoHandler(DemoConfig{SSEPath: ssePath})
}

// NewDemoHandler serves the demo page of cmd/embedded. On load it
// connects an EventSource (on cfg.SSEPath) and a WebSocket (on
// edge.WSRoute, subprotocol herald.v1) under the same name and group,
// DemoName and DemoGroup unless changed, and shows what each receives side
// by side; a message box sends to the WebSocket, and a form publishes
// through POST /publish. The page is self-contained (no external
// resources) and served with a strict Content-Security-Policy that allows
// exactly its own inline script and style, and connections to its own
// origin.
func NewDemoHandler(cfg DemoConfig) http.Handler {
	if cfg.SSEPath == "" {
		cfg.SSEPath = edge.DefaultSSEPath
	}
	page := []byte(strings.NewReplacer(
		"{{SSE_PATH}}", html.EscapeString(cfg.SSEPath),
		"{{WS_PREFIX}}", html.EscapeString(strings.TrimSuffix(edge.WSRoute, "/{path...}")),
		"{{WS_ECHO}}", html.EscapeString(strings.Join(cfg.WSEcho, ",")),
		"{{NAME}}", html.EscapeString(DemoName),
		"{{GROUP}}", html.EscapeString(DemoGroup),
		"{{EVENT_TYPES}}", html.EscapeString(DemoEventTypes),
		"{{TASK_ROUTES}}", html.EscapeString(strings.Join(cfg.TaskRoutes, ",")),
		"{{TASK_PATH}}", html.EscapeString(cmp.Or(cfg.TaskPath, edge.DefaultTaskPath)),
	).Replace(demoHTML))
	csp := "default-src 'none'; " +
		"script-src " + inlineHash(demoHTML, "<script>", "</script>") + "; " +
		"style-src " + inlineHash(demoHTML, "<style>", "</style>") + "; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		_, _ = w.Write(page)
	})
}

// inlineHash returns the CSP source 'sha256-...' of the text between the
// first open and close tags of page.
func inlineHash(page, open, close string) string {
	_, rest, ok := strings.Cut(page, open)
	body, _, ok2 := strings.Cut(rest, close)
	if !ok || !ok2 {
		panic("app: demo page has no " + open + " element") // the embedded file is fixed
	}
	sum := sha256.Sum256([]byte(body))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}
