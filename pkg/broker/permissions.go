package broker

import (
	"fmt"
	"strings"
)

// Role is a kind of NATS client in a Herald deployment. Each role has the
// least set of subjects that lets it do its job (Subjects.Permissions):
// a NATS server that gives every credential one role's permissions makes
// its port a trust boundary instead of the keys to the house.
type Role string

// The roles.
const (
	// RoleEdge is an edge (cmd/edge, the edge inside cmd/embedded): it
	// reads every event (live and from history), publishes events for
	// POST /publish and the echo, client messages and connection notices,
	// creates the history stream when it is missing, and reads it back.
	// It cannot delete or purge the stream.
	RoleEdge Role = "edge"
	// RoleProducer publishes events (and close commands) to any name,
	// group or client, acknowledged by the history stream or not. It reads
	// nothing: no event, no client message, no edge traffic.
	RoleProducer Role = "producer"
	// RoleConsumer is a worker: it reads what WebSocket clients send
	// (<prefix>.in.>) and the edges' lifecycle notices (<prefix>.sys.>),
	// and answers through the event subjects, as a producer does. It reads
	// no event.
	RoleConsumer Role = "consumer"
	// RoleAdmin may do anything, JetStream administration included
	// (deleting or purging the history stream).
	RoleAdmin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleEdge, RoleProducer, RoleConsumer, RoleAdmin}

// ParseRole returns the role named s ("edge", "producer", "consumer" or
// "admin", any case).
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range Roles {
		if r == known {
			return r, nil
		}
	}
	return "", fmt.Errorf("broker: unknown role %q (want edge, producer, consumer or admin)", s)
}

// Permissions are the subjects a role may publish to and subscribe to
// (NATS wildcards); everything else is denied.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// Responses lets the role answer requests it receives (one reply to
	// each request's reply subject, wherever it is). No role has it yet.
	Responses bool
}

// ClientInbox is the inbox prefix of NATS clients that keep the client
// library's default (_INBOX): the replies to their requests, such as the
// history stream's acknowledgements of a producer's publishes, arrive
// under it. Producers and consumers may subscribe to it; edges use their
// own (Subjects.EdgeInbox).
const ClientInbox = "_INBOX"

// EdgeInbox is the inbox prefix edges connect with
// (nats.CustomInboxPrefix): "_INBOX_" plus the subject prefix in upper
// case with dots as underscores, then "_EDGE" (_INBOX_HERALD_EDGE). The
// history stream's answers to an edge's replays carry every event, so no
// other role may read this inbox.
func (s Subjects) EdgeInbox() string {
	return "_INBOX_" + strings.ToUpper(strings.ReplaceAll(s.prefix, ".", "_")) + "_EDGE"
}

// Permissions returns what role may do in a deployment with this subject
// scheme and history stream (the stream name; "" when history is off). The
// admin role has no limits: nil.
//
// The edge's JetStream API subjects are exactly those its history uses:
// STREAM.INFO and STREAM.CREATE (open, and create again after a
// deletion), DIRECT.GET and STREAM.MSG.GET (replays), and the consumer
// verbs of the ordered consumers that replay replicated streams
// (CONSUMER.CREATE, CONSUMER.MSG.NEXT, CONSUMER.DELETE), all on the
// history stream only. TestEdgePermissionsSuffice uses every one of them.
func (s Subjects) Permissions(role Role, stream string) (*Permissions, error) {
	p := s.prefix + "."
	switch role {
	case RoleAdmin:
		return nil, nil
	case RoleProducer:
		return &Permissions{
			Publish:   []string{p + "ev.>"},
			Subscribe: []string{ClientInbox + ".>"}, // acknowledgements of acked publishes
		}, nil
	case RoleConsumer:
		// Async tasks add their subjects here, next to the inbound and
		// lifecycle subjects a worker reads (and Responses, if workers
		// answer an edge's requests: an edge's inbox is no role's to
		// publish to otherwise).
		return &Permissions{
			Publish:   []string{p + "ev.>"},
			Subscribe: []string{p + "in.>", p + "sys.>", ClientInbox + ".>"},
		}, nil
	case RoleEdge:
		// Edges answer one another (presence gathers and snapshots, in
		// chunks, to the asking edge's inbox) and the presence requests
		// of any client (Responses).
		e := &Permissions{
			Publish:   []string{p + "ev.>", p + "in.>", p + "sys.>", s.EdgeInbox() + ".>"},
			Subscribe: []string{p + "sys.>", s.EdgeInbox() + ".>"},
			Responses: true,
		}
		if stream == "" {
			e.Subscribe = append(e.Subscribe, p+"ev.>")
			return e, nil
		}
		api := "$JS.API."
		e.Subscribe = append(e.Subscribe, p+"live.>")
		e.Publish = append(e.Publish,
			api+"STREAM.INFO."+stream,
			api+"STREAM.CREATE."+stream,
			api+"DIRECT.GET."+stream,
			api+"STREAM.MSG.GET."+stream,
			api+"CONSUMER.CREATE."+stream+".>",
			api+"CONSUMER.MSG.NEXT."+stream+".>",
			api+"CONSUMER.DELETE."+stream+".>",
		)
		return e, nil
	}
	return nil, fmt.Errorf("broker: unknown role %q", role)
}
