package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/broker/tasks"
	"github.com/herald-push/herald/pkg/natsserver"
)

// A credential of -nats-auth is one of
//
//	ROLE:user:NAME:PASSWORD   a user name and its password (plain, or a bcrypt hash)
//	ROLE:token:TOKEN          a token
//	ROLE:nkey:PUBLIC-KEY      a user nkey's public key (U…); the client keeps the seed
//
// with ROLE one of broker.Roles (edge, producer, consumer, worker,
// backend, admin). The
// password and the token may contain colons, never commas or spaces.
type credential struct {
	role   broker.Role
	kind   string // "user", "token" or "nkey"
	name   string // user name (user)
	secret string // password (user) or token (token)
	nkey   string // public key (nkey)
}

// Kinds of credential.
const (
	credUser  = "user"
	credToken = "token"
	credNkey  = "nkey"
)

// parseCredential reads one -nats-auth item. Its errors never repeat a
// password or token.
func parseCredential(item string) (credential, error) {
	roleText, rest, _ := strings.Cut(item, ":")
	role, err := broker.ParseRole(roleText)
	if err != nil {
		return credential{}, fmt.Errorf("role %q: want edge, producer, consumer, worker, backend or admin, as in producer:user:NAME:PASSWORD", roleText)
	}
	kind, value, ok := strings.Cut(rest, ":")
	c := credential{role: role, kind: kind}
	switch {
	case !ok:
		return credential{}, fmt.Errorf("%s: want %s:user:NAME:PASSWORD, %s:token:TOKEN or %s:nkey:PUBLIC-KEY", role, role, role, role)
	case kind == credUser:
		c.name, c.secret, ok = strings.Cut(value, ":")
		if !ok || c.name == "" || c.secret == "" {
			return credential{}, fmt.Errorf("%s:user: want %s:user:NAME:PASSWORD", role, role)
		}
	case kind == credToken:
		if value == "" {
			return credential{}, fmt.Errorf("%s:token: the token is empty", role)
		}
		c.secret = value
	case kind == credNkey:
		c.nkey = value
	default:
		return credential{}, fmt.Errorf("%s: kind %q is not user, token or nkey", role, kind)
	}
	return c, nil
}

// String shows the credential without its secret:
// "producer:user:orders:[redacted]", "admin:nkey:UD…". Anything in the
// nkey place but a public key (a seed given by mistake) is hidden too.
func (c credential) String() string {
	switch {
	case c.kind == credUser:
		return string(c.role) + ":user:" + c.name + ":" + Redacted
	case c.kind == credNkey && nkeys.IsValidPublicUserKey(c.nkey):
		return string(c.role) + ":nkey:" + c.nkey
	}
	return string(c.role) + ":" + c.kind + ":" + Redacted
}

// redactCredential is the summary of one -nats-auth item.
func redactCredential(item string) string {
	c, err := parseCredential(item)
	if err != nil {
		return Redacted // unparsable: show nothing of it
	}
	return c.String()
}

// natsUsers returns the users of the embedded NATS server that -nats-auth
// describes, each with its role's permissions (none for an empty list:
// the server then requires no authentication). Errors name the item.
func (o *Options) natsUsers() ([]natsserver.User, error) {
	if len(o.NATSAuth) == 0 {
		return nil, nil
	}
	subjects, streams, err := o.natsScheme()
	if err != nil {
		return nil, err
	}
	creds := make([]credential, len(o.NATSAuth))
	users := make([]natsserver.User, len(o.NATSAuth))
	for i, item := range o.NATSAuth {
		c, err := parseCredential(item)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i+1, err)
		}
		perms, err := subjects.Permissions(c.role, streams)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i+1, err)
		}
		u := natsserver.User{Name: c.name, Password: "", Permissions: serverPermissions(perms)}
		switch c.kind {
		case credUser:
			u.Password = c.secret
		case credToken:
			u.Token = c.secret
			u.Name = string(c.role) + "-token-" + strconv.Itoa(i+1)
		case credNkey:
			u.Nkey = c.nkey
			u.Name = string(c.role) + "-nkey-" + strconv.Itoa(i+1)
		}
		creds[i], users[i] = c, u
	}
	if err := (natsserver.Config{Users: users}).Validate(); err != nil {
		var ce *natsserver.ConfigError
		if errors.As(err, &ce) {
			var i int
			if _, serr := fmt.Sscanf(ce.Field, "Users[%d]", &i); serr == nil && i < len(creds) {
				return nil, fmt.Errorf("item %d (%s): %w", i+1, creds[i], ce.Err)
			}
		}
		return nil, err
	}
	return users, nil
}

func serverPermissions(p *broker.Permissions) *natsserver.Permissions {
	if p == nil {
		return nil
	}
	return &natsserver.Permissions{Publish: p.Publish, Subscribe: p.Subscribe, Responses: p.Responses}
}

// edgePermissions returns the edge role's permissions for these options.
func (o *Options) edgePermissions() (*natsserver.Permissions, error) {
	subjects, streams, err := o.natsScheme()
	if err != nil {
		return nil, err
	}
	p, err := subjects.Permissions(broker.RoleEdge, streams)
	return serverPermissions(p), err
}

// natsScheme returns the subject scheme of these options and names the
// streams they use, which every role's JetStream subjects are scoped to:
// the history stream (-history, -history-stream), the lifecycle stream
// (-lifecycle-max-age) and the tasks' queue and bucket (-task-routes); ""
// for each feature that is off.
func (o *Options) natsScheme() (broker.Subjects, broker.Streams, error) {
	var st broker.Streams
	s, err := broker.NewSubjects(o.SubjectPrefix)
	if err != nil {
		return s, st, err
	}
	if o.History {
		st.History = broker.HistoryConfig{Stream: o.HistoryStream}.StreamConfig(s).Name
	}
	if o.Lifecycle && o.LifecycleMaxAge > 0 {
		st.Lifecycle = broker.LifecycleStreamConfig{}.StreamConfig(s).Name
	}
	if len(o.TaskRoutes) > 0 {
		names, err := tasks.NewNames(s.Prefix())
		if err != nil {
			return s, st, err
		}
		st.TaskQueue, st.TaskBucket = names.Queue, names.Bucket
	}
	return s, st, nil
}

// internalEdge is the credential of the edge inside cmd/embedded when the
// embedded server requires authentication: an nkey made at start, whose
// seed never leaves the process.
type internalEdge struct {
	user natsserver.User
	kp   nkeys.KeyPair
}

// embeddedEdgeName labels the embedded edge's NATS user in logs.
const embeddedEdgeName = "herald-embedded-edge"

func newInternalEdge(perms *natsserver.Permissions) (*internalEdge, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("app: embedded edge's NATS key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return &internalEdge{user: natsserver.User{Name: embeddedEdgeName, Nkey: pub, Permissions: perms}, kp: kp}, nil
}

// warnOpenNATS warns when the embedded NATS server takes clients from
// other machines without authentication: whoever reaches the port can read
// every event, close any client and delete the history.
func warnOpenNATS(logger *slog.Logger, o *Options) {
	if len(o.NATSAuth) > 0 {
		return
	}
	host, _, err := net.SplitHostPort(o.NATSListen)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		logger.Warn("the embedded NATS server accepts clients from other machines without authentication: "+
			"anyone who reaches it can read every event, close any client and delete the history; set -nats-auth",
			"nats_listen", o.NATSListen)
	}
}
