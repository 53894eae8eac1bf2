package broker

import (
	"fmt"
	"strings"
)

// Role is a kind of NATS client in a Herald deployment. Each role has the
// least set of subjects that lets it do its job (Subjects.Permissions):
// a NATS server that gives every credential one role's permissions makes
// its port a trust boundary instead of the keys to the house.
//
// The app's side has three roles, split by what a role could do if it
// were taken over: a consumer reads what clients say and who comes and
// goes; a worker runs async tasks; a backend is the app's server, which
// also decides who may connect as whom and serves Local streams, and so
// reads every connecting client's cookies and headers. Each can send any
// event to anyone (as a producer can); only the backend can let a browser
// in under any identity, that is, read any client's events through an
// edge.
type Role string

// The roles.
const (
	// RoleEdge is an edge (cmd/edge, the edge inside cmd/embedded): it
	// reads every event (live and from history), publishes events for
	// POST /publish and the echo, client messages, connection notices,
	// presence and lifecycle traffic, asks backends for connect decisions
	// and Local streams, runs the async tasks' queue and records, creates
	// the streams it uses when they are missing, and reads them back. It
	// cannot delete or purge a stream.
	RoleEdge Role = "edge"
	// RoleProducer publishes events (and close commands) to any name,
	// group or client, acknowledged by the history stream or not. It reads
	// nothing: no event, no client message, no edge traffic.
	RoleProducer Role = "producer"
	// RoleConsumer reads what WebSocket clients send (<prefix>.in.>) and
	// the lifecycle events (<prefix>.sys.lifecycle.>, and the lifecycle
	// stream through consumers of its own), asks the edges who is
	// connected (presence), and answers through the event subjects, as a
	// producer does. It reads no event.
	RoleConsumer Role = "consumer"
	// RoleWorker runs async tasks: it takes them from the work queue,
	// reports on <prefix>.task.report.<id>, hears stops and publishes the
	// tasks' events. It cannot read or change task records (only the
	// edges do, from its reports) nor change the queue.
	RoleWorker Role = "worker"
	// RoleBackend is the app's server: everything a consumer and a worker
	// do, plus connect decisions (<prefix>.auth.<name>, purges of the
	// edges' caches) and Local streams (<prefix>.local.<name>).
	RoleBackend Role = "backend"
	// RoleAdmin may do anything, JetStream administration included
	// (deleting or purging a stream).
	RoleAdmin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleEdge, RoleProducer, RoleConsumer, RoleWorker, RoleBackend, RoleAdmin}

// roleNames is Roles for messages: "edge, producer, …, backend or admin".
func roleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// ParseRole returns the role named s (one of Roles, any case).
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range Roles {
		if r == known {
			return r, nil
		}
	}
	return "", fmt.Errorf("broker: unknown role %q (want %s)", s, roleNames())
}

// Permissions are the subjects a role may publish to and subscribe to
// (NATS wildcards); everything else is denied.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// Responses lets the role answer requests it receives: one reply to
	// each request's reply subject, wherever it is, within 2 minutes
	// (nats-server's allow_responses). Edges answer presence requests,
	// one another's gathers and workers' reports; backends answer connect
	// requests.
	Responses bool
}

// Streams names the JetStream streams and bucket of a deployment, which
// the roles' JetStream subjects are scoped to; "" means the feature is
// off, and a role then has no subject of it.
type Streams struct {
	// History is the history stream (HistoryConfig.StreamConfig's Name).
	History string
	// Lifecycle is the lifecycle stream (LifecycleStreamConfig.StreamConfig's Name).
	Lifecycle string
	// TaskQueue and TaskBucket are the async tasks' work-queue stream and
	// key-value bucket (package tasks' Names.Queue and Names.Bucket): both
	// or neither.
	TaskQueue  string
	TaskBucket string
}

// ClientInbox is the inbox prefix of NATS clients that keep the client
// library's default (_INBOX): the replies to their requests, such as the
// history stream's acknowledgements of a producer's publishes, arrive
// under it. Producers, consumers, workers and backends may subscribe to
// it; edges use their own (Subjects.EdgeInbox).
const ClientInbox = "_INBOX"

// EdgeInbox is the inbox prefix edges connect with
// (nats.CustomInboxPrefix): "_INBOX_" plus the subject prefix in upper
// case with dots as underscores, then "_EDGE" (_INBOX_HERALD_EDGE). The
// history stream's answers to an edge's replays carry every event, so no
// other role may read this inbox; nor may any other role publish to it
// but once, in answer to an edge's request.
func (s Subjects) EdgeInbox() string {
	return "_INBOX_" + strings.ToUpper(strings.ReplaceAll(s.prefix, ".", "_")) + "_EDGE"
}

// jsAPI is the prefix of the JetStream API's subjects.
const jsAPI = "$JS.API."

// Permissions returns what role may do in a deployment with this subject
// scheme and these streams. The admin role has no limits: nil.
//
// Every JetStream subject is scoped to one stream by name. The edge's are
// exactly those its features use (TestEdgePermissionsSuffice and the
// tests of each feature use every one of them):
//
//   - history: STREAM.INFO and STREAM.CREATE (open, and create again
//     after a deletion), DIRECT.GET and STREAM.MSG.GET (replays), and the
//     consumer verbs of the ordered consumers that replay replicated
//     streams (CONSUMER.CREATE, CONSUMER.MSG.NEXT, CONSUMER.DELETE);
//   - the lifecycle stream: STREAM.INFO and STREAM.CREATE;
//   - tasks: the queue's STREAM.CREATE and STREAM.UPDATE (created or
//     updated at start), its route consumers' CONSUMER.CREATE,
//     STREAM.INFO, STREAM.MSG.GET and STREAM.MSG.DELETE (a task that ran
//     out of attempts); the bucket's stream likewise created or updated
//     (after INFO, the account's JetStream info), read with DIRECT.GET,
//     written on $KV.<bucket>.>, and watched through ordered push
//     consumers (CONSUMER.CREATE, CONSUMER.DELETE, flow control on
//     $JS.FC).
func (s Subjects) Permissions(role Role, st Streams) (*Permissions, error) {
	p := s.prefix + "."
	inbox := ClientInbox + ".>"
	switch role {
	case RoleAdmin:
		return nil, nil
	case RoleProducer:
		return &Permissions{
			Publish:   []string{p + "ev.>"},
			Subscribe: []string{inbox}, // acknowledgements of acked publishes
		}, nil
	case RoleConsumer:
		c := s.consumer(st)
		c.Subscribe = append(c.Subscribe, inbox)
		return c, nil
	case RoleWorker:
		w := s.worker(st)
		w.Publish = append([]string{p + "ev.>"}, w.Publish...)
		w.Subscribe = append(w.Subscribe, inbox)
		return w, nil
	case RoleBackend:
		c, w := s.consumer(st), s.worker(st)
		return &Permissions{
			Publish: union(c.Publish, w.Publish,
				[]string{s.AuthPurge(), s.localStream("*")}),
			Subscribe: union(c.Subscribe, w.Subscribe,
				[]string{s.AuthAll(), s.LocalAll(), s.localCancel("*"), inbox}),
			Responses: true, // connect decisions
		}, nil
	case RoleEdge:
		return s.edge(st), nil
	}
	return nil, fmt.Errorf("broker: unknown role %q", role)
}

// consumer is the consumer role without the client inbox: client messages,
// lifecycle events (live, and through its own consumers of the lifecycle
// stream) and presence requests, and events to answer with.
func (s Subjects) consumer(st Streams) *Permissions {
	c := &Permissions{
		Publish: []string{s.prefix + ".ev.>",
			s.PresenceSubject(presenceLookup), s.PresenceSubject(presenceList), s.PresenceSubject(presenceCheck)},
		Subscribe: []string{s.in + ">", s.LifecycleAll()},
	}
	if lc := st.Lifecycle; lc != "" {
		// A backend's durable (or ordered) consumers of the stream: INFO is
		// the account's JetStream info, which JetStream clients ask for
		// first (nats.js's jetstreamManager).
		c.Publish = append(c.Publish,
			jsAPI+"INFO",
			jsAPI+"STREAM.INFO."+lc,
			jsAPI+"CONSUMER.CREATE."+lc+".>",
			jsAPI+"CONSUMER.INFO."+lc+".>",
			jsAPI+"CONSUMER.MSG.NEXT."+lc+".>",
			jsAPI+"CONSUMER.DELETE."+lc+".>",
			"$JS.ACK."+lc+".>",
		)
	}
	return c
}

// worker is the worker role without the event subjects and the client
// inbox: the task queue's route consumers (read, fetch from, acknowledge),
// reports and stops. Nothing without tasks.
func (s Subjects) worker(st Streams) *Permissions {
	q := st.TaskQueue
	if q == "" {
		return &Permissions{}
	}
	t := s.prefix + ".task."
	return &Permissions{
		Publish: []string{t + "report.*",
			jsAPI + "INFO",
			jsAPI + "CONSUMER.INFO." + q + ".*",
			jsAPI + "CONSUMER.MSG.NEXT." + q + ".*",
			"$JS.ACK." + q + ".>",
		},
		Subscribe: []string{t + "stop.*"},
	}
}

// edge is the edge role.
func (s Subjects) edge(st Streams) *Permissions {
	p := s.prefix + "."
	e := &Permissions{
		// Edges answer one another (presence gathers: one reply each) and
		// the presence requests of any client (Responses); a snapshot
		// goes to the asking edge's inbox in several messages.
		Publish: []string{p + "ev.>", p + "in.>", p + "sys.>", s.EdgeInbox() + ".>",
			s.AuthAll(), s.LocalAll(), s.localCancel("*")},
		Subscribe: []string{p + "sys.>", s.EdgeInbox() + ".>", s.AuthPurge(), s.localStream("*")},
		Responses: true,
	}
	if h := st.History; h != "" {
		e.Subscribe = append(e.Subscribe, p+"live.>")
		e.Publish = append(e.Publish,
			jsAPI+"STREAM.INFO."+h,
			jsAPI+"STREAM.CREATE."+h,
			jsAPI+"DIRECT.GET."+h,
			jsAPI+"STREAM.MSG.GET."+h,
			jsAPI+"CONSUMER.CREATE."+h+".>",
			jsAPI+"CONSUMER.MSG.NEXT."+h+".>",
			jsAPI+"CONSUMER.DELETE."+h+".>",
		)
	} else {
		e.Subscribe = append(e.Subscribe, p+"ev.>")
	}
	if lc := st.Lifecycle; lc != "" {
		e.Publish = append(e.Publish, jsAPI+"STREAM.INFO."+lc, jsAPI+"STREAM.CREATE."+lc)
	}
	if q, b := st.TaskQueue, st.TaskBucket; q != "" {
		kv := "KV_" + b
		e.Publish = append(e.Publish,
			p+"task.run.*", p+"task.stop.*",
			jsAPI+"INFO",
			jsAPI+"STREAM.CREATE."+q,
			jsAPI+"STREAM.UPDATE."+q,
			jsAPI+"STREAM.INFO."+q,
			jsAPI+"STREAM.MSG.GET."+q,
			jsAPI+"STREAM.MSG.DELETE."+q,
			jsAPI+"CONSUMER.CREATE."+q+".>",
			jsAPI+"STREAM.CREATE."+kv,
			jsAPI+"STREAM.UPDATE."+kv,
			jsAPI+"DIRECT.GET."+kv+".>",
			jsAPI+"CONSUMER.CREATE."+kv+".>",
			jsAPI+"CONSUMER.DELETE."+kv+".>",
			"$KV."+b+".>",
			"$JS.FC."+kv+".>",
		)
		e.Subscribe = append(e.Subscribe,
			p+"task.report.*",
			"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+q+".*",
		)
	}
	return e
}

// union returns the subjects of lists, each once, in order of first appearance.
func union(lists ...[]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, subject := range l {
			if !seen[subject] {
				seen[subject] = true
				out = append(out, subject)
			}
		}
	}
	return out
}
