//go:build !linux

package edge

import "net"

// goneWatcher is Linux-only; elsewhere every hijacked connection has a
// reader goroutine that notices the client leaving (readUntilGone).
type goneWatcher struct{}

func newGoneWatcher() *goneWatcher                { return nil }
func (w *goneWatcher) watch(net.Conn, *conn) bool { return false }
func (w *goneWatcher) forget(*conn)               {}
func (w *goneWatcher) close()                     {}
