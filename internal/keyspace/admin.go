package keyspace

// Keys of the admin API (package adminapi). Each lives in the shard of the
// API client's key, so one client's keys share a slot.
//
//	<ns>:{<tag>}:nonce:<client>:<nonce>        string  a v2 nonce already used; TTL the replay window
//	<ns>:{<tag>}:idem:<client>:<key>           string  the first response to an Idempotency-Key
//	<ns>:{<tag>}:ratelimit:<name>:<client>     zset    sliding-window log of a client's requests

// Nonce is the key that remembers a client's nonce.
func (s Space) Nonce(client, nonce string) string {
	return s.shardPrefix(ShardOf(client)) + "nonce:" + client + ":" + nonce
}

// Idempotency is the key of a client's Idempotency-Key.
func (s Space) Idempotency(client, key string) string {
	return s.shardPrefix(ShardOf(client)) + "idem:" + client + ":" + key
}

// RateLimit is the request log of a client's named rate limit.
func (s Space) RateLimit(name, client string) string {
	return s.shardPrefix(ShardOf(client)) + "ratelimit:" + name + ":" + client
}
