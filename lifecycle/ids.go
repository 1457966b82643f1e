package lifecycle

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/google/uuid"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// Session ids and tokens name their shard, so that a read goes straight to
// the session's slot.

// newSessionID returns a random UUID v4 whose last hex digit is the shard
// (118 random bits remain).
func newSessionID(sh keyspace.Shard) string {
	u := uuid.New()
	u[15] = u[15]&0xf0 | byte(sh)
	return u.String()
}

// tokenPrefix starts every session token.
const tokenPrefix = "vst_"

// newToken returns a fresh opaque token of shard sh and the hash that is
// stored. Its first byte is the shard; the other 31 are random (248 bits).
func newToken(sh keyspace.Shard) (token, hash string) {
	var b [32]byte
	rand.Read(b[:]) // never fails since Go 1.24
	b[0] = byte(sh)
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, hashToken(token)
}

// tokenShard is the shard a token names; ok is false for a string that
// is not one of sessiond's tokens.
func tokenShard(token string) (keyspace.Shard, bool) {
	body, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok || len(body) != 43 {
		return 0, false
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(b) != 32 || b[0] >= keyspace.Shards {
		return 0, false
	}
	return keyspace.Shard(b[0]), true
}

// TokenShard is the shard of a token's session, for the admin API's nonce.
func TokenShard(token string) (keyspace.Shard, bool) { return tokenShard(token) }

// hashToken is what Redis keeps of a token: the first 128 bits of its
// SHA-256, base64url (22 characters). A token carries 248 random bits, so
// finding one from its hash is out of reach, and two tokens colliding
// under 128 bits is not a concern; half the digest halves the token key's
// name and the record's copy.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}
