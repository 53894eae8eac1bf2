package app

import (
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Redacted replaces a secret in every summary of the options.
const Redacted = "[redacted]"

// LogValue implements slog.LogValuer: the options of the binary they were
// loaded for, as a group, with secrets redacted. Logging *Options can never
// leak the signing secret, publish tokens or NATS credentials.
func (o *Options) LogValue() slog.Value {
	return slog.GroupValue(o.Summary()...)
}

// Summary returns one attribute per option of the binary, in help order,
// with secrets redacted: a set secret shows as [redacted] (lists as
// "[redacted] x N"), credentials in URLs are removed.
func (o *Options) Summary() []slog.Attr {
	attrs := make([]slog.Attr, 0, len(optionTable)+1)
	if o.Config != "" {
		attrs = append(attrs, slog.String(configOption, o.Config))
	}
	mode := o.mode
	if mode == 0 {
		mode = modeBoth
	}
	for _, op := range optionTable {
		if op.modes&mode == 0 {
			continue
		}
		attrs = append(attrs, slog.Attr{Key: op.name, Value: o.summaryValue(op)})
	}
	return attrs
}

func (o *Options) summaryValue(op *option) slog.Value {
	switch p := op.field(o).(type) {
	case *string:
		switch {
		case op.secret && *p != "":
			return slog.StringValue(Redacted)
		case op.name == "nats-listen" || op.name == "cluster-listen":
			return slog.StringValue(*p)
		}
		return slog.StringValue(redactURL(*p))
	case *[]string:
		if op.secret {
			switch {
			case len(*p) == 0:
				return slog.StringValue("")
			case op.name == "publish-token" && o.generatedToken:
				return slog.StringValue(Redacted + " (generated)")
			case op.redactItem != nil:
				items := make([]string, len(*p))
				for i, s := range *p {
					items[i] = op.redactItem(s)
				}
				return slog.StringValue(strings.Join(items, ","))
			case len(*p) == 1:
				return slog.StringValue(Redacted)
			}
			return slog.StringValue(Redacted + " x " + strconv.Itoa(len(*p)))
		}
		items := make([]string, len(*p))
		for i, s := range *p {
			items[i] = redactURL(s)
		}
		return slog.StringValue(strings.Join(items, ","))
	case *bool:
		return slog.BoolValue(*p)
	case *time.Duration:
		return slog.DurationValue(*p)
	case *int:
		return slog.IntValue(*p)
	case *float64:
		return slog.Float64Value(*p)
	}
	return slog.StringValue("?")
}

// String implements fmt.Stringer with the redacted summary, so that %v and
// %+v of Options never print a secret.
func (o *Options) String() string {
	var b strings.Builder
	for i, a := range o.Summary() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", a.Key, a.Value)
	}
	return b.String()
}

// GoString implements fmt.GoStringer like String, for %#v.
func (o *Options) GoString() string { return "app.Options{" + o.String() + "}" }

// redactURL removes the user information (user, password or token) from a
// URL; other text is returned unchanged.
func redactURL(s string) string {
	if !strings.Contains(s, "://") || !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		// Not parseable: drop everything between "://" and the last "@".
		i := strings.Index(s, "://") + 3
		j := strings.LastIndexByte(s, '@')
		if j < i {
			return s
		}
		return s[:i] + Redacted + s[j:]
	}
	if u.User == nil {
		return s
	}
	u.User = nil
	out := u.String()
	i := strings.Index(out, "://") + 3
	return out[:i] + Redacted + "@" + out[i:]
}
