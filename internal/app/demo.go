package app

import (
	"crypto/sha256"
	_ "embed" // the demo page
	"encoding/base64"
	"html"
	"net/http"
	"strings"
)

//go:embed demo.html
var demoHTML string

// DemoHandler serves the demo page of cmd/embedded: a form that opens an
// EventSource on ssePath (the edge's SSE route pattern) and shows every
// event, and a form that publishes through POST /publish. The page is
// self-contained (no external resources) and served with a strict
// Content-Security-Policy that allows exactly its own inline script and
// style.
func DemoHandler(ssePath string) http.Handler {
	page := []byte(strings.Replace(demoHTML, "{{SSE_PATH}}", html.EscapeString(ssePath), 1))
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
