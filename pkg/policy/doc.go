// Package policy holds Herald's pure decisions: clientId signing and
// verification (Pode-compatible), broadcast levels, identity validation and
// limits. It performs no I/O beyond reading crypto/rand for new client ids,
// and imports nothing else from Herald.
package policy
