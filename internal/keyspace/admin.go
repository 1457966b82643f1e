package keyspace

import (
	"crypto/sha256"
	"encoding/hex"
)

// Keys of the admin API (package adminapi). A nonce is kept in the shard
// of what the request acts on (the session's, the ref_id's for a create),
// so that spending it can go with the request's first read; the other
// keys live in the shard of the API client's key.
//
//	<ns>:{<tag>}:nonce:<client>:<nonce>        string  a v2 nonce already used; TTL the replay window
//	<ns>:{<tag>}:idem:<client>:<sha256(key)>   string  the first response to an Idempotency-Key
//	<ns>:{<tag>}:ratelimit:<name>:<client>     zset    sliding-window log of a client's requests

// Nonce is the key that remembers a client's nonce in shard sh.
func (s Space) Nonce(sh Shard, client, nonce string) string {
	return s.shardPrefix(sh) + "nonce:" + client + ":" + nonce
}

// ClientShard is the shard of an API client's own keys.
func ClientShard(client string) Shard { return ShardOf(client) }

// Idempotency is the key of a client's Idempotency-Key. It is named after
// the key's SHA-256, not the key: clients build keys from what they have
// at hand (a ref_id, an email), and a key name must not keep that.
func (s Space) Idempotency(client, key string) string {
	sum := sha256.Sum256([]byte(key))
	return s.shardPrefix(ClientShard(client)) + "idem:" + client + ":" + hex.EncodeToString(sum[:16])
}

// RateLimit is the request log of a client's named rate limit.
func (s Space) RateLimit(name, client string) string {
	return s.shardPrefix(ClientShard(client)) + "ratelimit:" + name + ":" + client
}
