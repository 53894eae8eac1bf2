package natsserver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// serverLogger adapts nats-server's Logger to slog and records the first
// fatal error, which Start reports instead of waiting out its
// timeout. It never exits the process, unlike nats-server's own logger.
type serverLogger struct {
	l     *slog.Logger // nil: discard everything but the fatal error
	debug bool         // whether the server should emit debug output

	mu    sync.Mutex
	fatal error // first Fatalf, guarded by mu
}

var _ server.Logger = (*serverLogger)(nil)

func newServerLogger(l *slog.Logger, serverName string) *serverLogger {
	sl := &serverLogger{}
	if l != nil {
		sl.l = l.With("component", "nats-server", "server", serverName)
		sl.debug = l.Enabled(context.Background(), slog.LevelDebug)
	}
	return sl
}

func (s *serverLogger) logf(level slog.Level, format string, v []any) {
	if s.l == nil || !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (s *serverLogger) fatalErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatal
}

// Noticef logs at Info.
func (s *serverLogger) Noticef(format string, v ...any) { s.logf(slog.LevelInfo, format, v) }

// Warnf logs at Warn.
func (s *serverLogger) Warnf(format string, v ...any) { s.logf(slog.LevelWarn, format, v) }

// Errorf logs at Error.
func (s *serverLogger) Errorf(format string, v ...any) { s.logf(slog.LevelError, format, v) }

// Fatalf logs at Error and records the error; the server stops what it was
// doing and Start shuts it down.
func (s *serverLogger) Fatalf(format string, v ...any) {
	s.mu.Lock()
	if s.fatal == nil {
		s.fatal = fmt.Errorf(format, v...)
	}
	s.mu.Unlock()
	s.logf(slog.LevelError, format, v)
}

// Debugf logs at Debug.
func (s *serverLogger) Debugf(format string, v ...any) { s.logf(slog.LevelDebug, format, v) }

// Tracef logs at Debug-4 (trace is never switched on by Start).
func (s *serverLogger) Tracef(format string, v ...any) { s.logf(slog.LevelDebug-4, format, v) }
