package broker

import (
	"fmt"
	"strconv"
	"strings"
)

// MinServerVersion is the oldest nats-server the history works with. 2.9.0
// brought what resume and gap repair stand on: direct gets with
// next_by_subj, the stream message get with next_by_subj, allow_direct, and
// republish with Nats-Last-Sequence. Servers from 2.9.0 replay with one
// request per message; 2.10.0 adds consumers with several filter subjects
// (replicated streams replay through one ordered consumer) and 2.11.0
// batched direct gets (one request per 256 messages).
const MinServerVersion = "2.9.0"

// serverVersion is a nats-server release: major.minor.patch.
type serverVersion struct{ major, minor, patch int }

// parseServerVersion reads "2.9.10", "v2.11.0", "2.12.0-RC.3" or
// "2.10.22+build": a pre-release or build suffix is ignored.
func parseServerVersion(s string) (serverVersion, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(s, "-+ "); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return serverVersion{}, false
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return serverVersion{}, false
		}
		n[i] = v
	}
	return serverVersion{n[0], n[1], n[2]}, true
}

func (v serverVersion) atLeast(major, minor, patch int) bool {
	if v.major != major {
		return v.major > major
	}
	if v.minor != minor {
		return v.minor > minor
	}
	return v.patch >= patch
}

func (v serverVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.patch) }

// readMode is how a History reads stored messages back (Replay).
type readMode uint32

const (
	// readBatch: batched direct gets, 256 messages a request (one
	// replica, nats-server 2.11.0 and newer).
	readBatch readMode = iota
	// readDirect: one direct get per message (one replica, 2.9.x and
	// 2.10.x, which ignore the batch field and answer a single message).
	readDirect
	// readConsumer: an ordered consumer with the replay's filter subjects
	// (several replicas: it reads the stream leader; 2.10.0 and newer).
	readConsumer
	// readMsgGet: one stream message get per message through the
	// JetStream API, answered by the leader (several replicas on 2.9.x,
	// whose consumers take one filter subject only).
	readMsgGet
)

func (m readMode) String() string {
	switch m {
	case readBatch:
		return "batched direct gets"
	case readDirect:
		return "direct gets"
	case readConsumer:
		return "ordered consumer"
	case readMsgGet:
		return "message gets"
	}
	return "unknown"
}

// chooseReadMode picks how to replay a stream with replicas replicas (and
// direct gets allowed or not) from the version of the server the client is
// connected to. An empty or unparsable version (a server that does not
// say) is taken as current.
func chooseReadMode(version string, direct bool, replicas int) (readMode, error) {
	v, ok := parseServerVersion(version)
	if ok && !v.atLeast(2, 9, 0) {
		return 0, fmt.Errorf("nats-server %s is too old: Herald's history needs %s or newer", v, MinServerVersion)
	}
	current := !ok
	switch {
	case direct && replicas <= 1 && (current || v.atLeast(2, 11, 0)):
		return readBatch, nil
	case direct && replicas <= 1:
		return readDirect, nil
	case current || v.atLeast(2, 10, 0):
		return readConsumer, nil
	}
	return readMsgGet, nil
}
