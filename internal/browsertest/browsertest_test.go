package browsertest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-push/herald/internal/browsertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A page with an input, a console message and an inline script its CSP
// refuses: the driver types into the input and presses Enter, evaluates
// in two tabs independently, and reports the console message and the CSP
// violation.
func TestBrowser(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "script-src 'self'")
		if r.URL.Path == "/page.js" {
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = io.WriteString(w, `console.log("page loaded", 42); window.loaded = true;
document.getElementById("box").addEventListener("keydown", function (e) {
  if (e.key === "Enter") { window.entered = e.target.value; }
});`)
			return
		}
		_, _ = io.WriteString(w, `<!doctype html><input id="box"><script src="/page.js"></script><script>window.inline = true;</script>`)
	}))
	defer srv.Close()

	b := browsertest.Launch(t)
	p1, p2 := b.Open(t, srv.URL+"/"), b.Open(t, srv.URL+"/")
	for _, p := range []*browsertest.Page{p1, p2} {
		p.Wait(t, 30*time.Second, "window.loaded === true", "the page's script ran")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p1.Eval(ctx, `document.getElementById("box").focus()`, nil); err != nil {
		t.Fatal(err)
	}
	if err := p1.Type(ctx, "héllo ✓"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"héllo ✓", ""} {
		var got string
		if err := []*browsertest.Page{p1, p2}[i].Eval(ctx, `document.getElementById("box").value`, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("tab %d: box holds %q, want %q", i+1, got, want)
		}
	}
	if err := p1.Press(ctx, "Enter"); err != nil {
		t.Fatal(err)
	}
	p1.Wait(t, 10*time.Second, `window.entered === "héllo ✓"`, "Enter reached the box's keydown listener")
	if err := p1.Press(ctx, "F13"); err == nil {
		t.Error("Press of an unknown key: no error")
	}
	var inline bool
	if err := p1.Eval(ctx, `window.inline === true`, &inline); err != nil || inline {
		t.Errorf("the inline script ran (%v, %v) although the CSP forbids it", inline, err)
	}
	if err := p1.Eval(ctx, `undefinedFunction()`, nil); err == nil || !strings.Contains(err.Error(), "ReferenceError") {
		t.Errorf("an exception in Eval: err = %v, want a ReferenceError", err)
	}

	p1.Wait(t, 10*time.Second, "true", "nothing") // a round trip, so that the log events have arrived
	logs := strings.Join(p1.Logs(), "\n")
	for _, want := range []string{"console.log: page loaded 42", "Content Security Policy"} {
		if !strings.Contains(logs, want) {
			t.Errorf("page logs lack %q:\n%s", want, logs)
		}
	}
}
