// Package policy holds Herald's pure decisions: clientId signing and
// verification (Pode-compatible), broadcast levels, identity validation,
// limits, and who may connect: the connect mode and scope of each name
// (connect.go) and the check of the tokens apps sign for their clients
// (token.go, on github.com/golang-jwt/jwt). It performs no I/O beyond
// reading crypto/rand for new client ids, and imports nothing else from
// Herald.
package policy
