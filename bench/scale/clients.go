package scale

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/herald-push/herald/pkg/broker"
)

// Design is an interest design: how an edge's connections become NATS
// subscriptions.
type Design struct {
	// Shards is 0 for Herald's literal per-client subjects; S > 0 means
	// per-client events are republished to one of S shard subjects
	// (fnv32a(clientId token) mod S, NATS's partition() mapping) and an
	// edge subscribes to the shards of the clients it holds, dropping
	// events for clients it does not hold.
	Shards int `json:"shards"`
}

func (d Design) String() string {
	if d.Shards == 0 {
		return "literal"
	}
	return "sharded-" + strconv.Itoa(d.Shards)
}

// MarshalText names the design in reports.
func (d Design) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads "literal" or "sharded-S".
func (d *Design) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "literal" {
		*d = Design{}
		return nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "sharded-%d", &n); err != nil || n <= 0 {
		return fmt.Errorf("scale: design %q is neither literal nor sharded-S", s)
	}
	*d = Design{Shards: n}
	return nil
}

// Population is the set of clients of a run: client i has a random-looking
// but reproducible GUID and belongs to group i mod Groups of one name.
type Population struct {
	Seed   uint64 `json:"seed"`
	Name   string `json:"name"`
	Groups int    `json:"groups"`
}

// ID returns client i's clientId, a lowercase 8-4-4-4-12 GUID string.
func (p Population) ID(i int) string {
	var b [16]byte
	x := splitmix(p.Seed ^ uint64(i)*0x9e3779b97f4a7c15)
	y := splitmix(x)
	for k := range 8 {
		b[k] = byte(x >> (8 * k))
		b[8+k] = byte(y >> (8 * k))
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Group returns client i's group ("" when Groups is 0).
func (p Population) Group(i int) string {
	if p.Groups == 0 {
		return ""
	}
	return fmt.Sprintf("g%03d", i%p.Groups)
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Shard is the shard of a clientId token among n: what the NATS server's
// {{partition(n,3)}} computes for the token.
func Shard(token string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(token))
	return int(h.Sum32() % uint32(n))
}

// AnyShard is the shard of "_" (no clientId): name and group broadcasts in
// the sharded design. Every edge of a name subscribes to it.
func AnyShard(n int) int { return Shard(broker.Any, n) }

// ShardSubject is the live subject an edge subscribes to for one shard of
// a name: every group (a wildcard) and the shard's token.
func ShardSubject(live broker.Subjects, name string, shard int) string {
	return live.Prefix() + ".live." + broker.EscapeToken(name) + ".*." + strconv.Itoa(shard)
}

// ShardedRePublish is the history stream's RePublish for the sharded
// design: the clientId token is replaced by its partition.
func ShardedRePublish(s broker.Subjects, shards int) (src, dst string) {
	p := s.Prefix()
	return p + ".ev.*.*.*", fmt.Sprintf("%s.live.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(%d,3)}}", p, shards)
}

// Subjects returns what an edge subscribes to for client i, in the order
// pkg/edge's register acquires them. Literal: the name's subject, the
// client's own subject, the name's connection-notice wildcard, and with a
// group the group's subject and the client's subject in the group.
// Sharded: the name's broadcast shard, the client's shard, the notices.
func (d Design) Subjects(subj broker.Subjects, p Population, i int) []string {
	live := subj.Live()
	id, g := p.ID(i), p.Group(i)
	if d.Shards > 0 {
		return []string{
			ShardSubject(live, p.Name, AnyShard(d.Shards)),
			ShardSubject(live, p.Name, Shard(broker.EscapeToken(id), d.Shards)),
			subj.SysConnName(p.Name),
		}
	}
	s := []string{live.EventName(p.Name), live.Event(broker.Address{Name: p.Name, ClientID: id}), subj.SysConnName(p.Name)}
	if g != "" {
		s = append(s, live.EventGroup(p.Name, g), live.Event(broker.Address{Name: p.Name, Group: g, ClientID: id}))
	}
	return s
}

// PerClient is how many subscriptions of a client are its own (not
// shared with other clients of the edge) in the literal design.
func (p Population) PerClient() int {
	if p.Groups == 0 {
		return 1
	}
	return 2
}

// Span is a set of client indices: [From, To) with i mod Mod == Rem
// (Mod 0 or 1 means every index).
type Span struct {
	From int `json:"from"`
	To   int `json:"to"`
	Mod  int `json:"mod,omitempty"`
	Rem  int `json:"rem,omitempty"`
}

// Each calls fn for every index of the span, in order.
func (s Span) Each(fn func(i int)) {
	step, start := 1, s.From
	if s.Mod > 1 {
		step = s.Mod
		start = s.From + ((s.Rem-s.From)%s.Mod+s.Mod)%s.Mod
	}
	for i := start; i < s.To; i += step {
		fn(i)
	}
}

// Len is the number of indices in the span.
func (s Span) Len() int {
	n := 0
	s.Each(func(int) { n++ })
	return n
}
