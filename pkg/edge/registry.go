package edge

import (
	"sync"

	"github.com/herald-push/herald/pkg/broker"
)

// registry indexes this edge's open connections by name, group and
// clientId, following Pode's matching rules: name and clientId compare
// case-sensitively, groups case-insensitively (keys are lowercased), and a
// clientId is unique within a name.
type registry struct {
	mu    sync.RWMutex
	names map[string]*nameIndex // guarded by mu
	n     int                   // guarded by mu
}

type nameIndex struct {
	conns   map[*conn]struct{}
	groups  map[string]map[*conn]struct{}
	clients map[string]*conn
}

func newRegistry() *registry {
	return &registry{names: make(map[string]*nameIndex)}
}

// add registers c and returns the connection it replaces (same name and
// clientId), if any; that connection is no longer indexed.
func (r *registry) add(c *conn) (replaced *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ni := r.names[c.name]
	if ni == nil {
		ni = &nameIndex{conns: map[*conn]struct{}{}, groups: map[string]map[*conn]struct{}{}, clients: map[string]*conn{}}
		r.names[c.name] = ni
	}
	if old := ni.clients[c.id]; old != nil {
		r.removeLocked(ni, old)
		replaced = old
	}
	ni.conns[c] = struct{}{}
	ni.clients[c.id] = c
	if c.gkey != "" {
		g := ni.groups[c.gkey]
		if g == nil {
			g = map[*conn]struct{}{}
			ni.groups[c.gkey] = g
		}
		g[c] = struct{}{}
	}
	r.n++
	return replaced
}

// remove unregisters c; it reports whether c was registered.
func (r *registry) remove(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ni := r.names[c.name]
	if ni == nil {
		return false
	}
	if _, ok := ni.conns[c]; !ok {
		return false
	}
	r.removeLocked(ni, c)
	if len(ni.conns) == 0 {
		delete(r.names, c.name)
	}
	return true
}

func (r *registry) removeLocked(ni *nameIndex, c *conn) {
	delete(ni.conns, c)
	if ni.clients[c.id] == c {
		delete(ni.clients, c.id)
	}
	if c.gkey != "" {
		if g := ni.groups[c.gkey]; g != nil {
			delete(g, c)
			if len(g) == 0 {
				delete(ni.groups, c.gkey)
			}
		}
	}
	r.n--
}

// match appends to dst the connections an address targets. a.Group must
// already be lowercased (subjects carry lowercased groups). Group and
// ClientID together mean AND.
func (r *registry) match(a broker.Address, dst []*conn) []*conn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if a.AllNames() {
		for _, ni := range r.names {
			dst = ni.match(a, dst)
		}
		return dst
	}
	if ni := r.names[a.Name]; ni != nil {
		dst = ni.match(a, dst)
	}
	return dst
}

func (ni *nameIndex) match(a broker.Address, dst []*conn) []*conn {
	switch {
	case a.ClientID != "":
		if c := ni.clients[a.ClientID]; c != nil && (a.Group == "" || c.gkey == a.Group) {
			dst = append(dst, c)
		}
	case a.Group != "":
		for c := range ni.groups[a.Group] {
			dst = append(dst, c)
		}
	default:
		for c := range ni.conns {
			dst = append(dst, c)
		}
	}
	return dst
}

// all appends every registered connection to dst.
func (r *registry) all(dst []*conn) []*conn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, ni := range r.names {
		for c := range ni.conns {
			dst = append(dst, c)
		}
	}
	return dst
}

// len returns the number of registered connections.
func (r *registry) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}
