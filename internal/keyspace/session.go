package keyspace

import (
	"strconv"
)

// Keys of the session store (package lifecycle) and of the webhook
// deliveries (package dispatcher). Everything one transition touches lives
// in the shard of the session's ref_id; the session id and the token name
// that shard (SessionShard, TokenShard), so reads need no look-up.
//
//	<ns>:{<tag>}:s:<id>            string  the session record: "<version> <JSON, no personal data>"
//	<ns>:{<tag>}:p:<id>            string  person and metadata (JSON); TTL ends with retention
//	<ns>:{<tag>}:tok:<hash>        string  session id of a live token (hash: base64url of the
//	                                       first 128 bits of its SHA-256); TTL the token's lifetime
//	<ns>:{<tag>}:ref:<ref_id>      string  id of the ref_id's active session
//	<ns>:{<tag>}:ev:<id>           hash    the session's event details: "_" the constant part,
//	                                       <event id> the rest of each event's data (compact JSON)
//	<ns>:{<tag>}:dl:<id>           hash    the session's webhook deliveries (dispatcher)
//	<ns>:{<tag>}:idx:all           zset    every live session of the shard, member IndexMember
//	<ns>:{<tag>}:idx:st:<status>   zset    the shard's sessions by status
//	<ns>:{<tag>}:idx:ref:<ref_id>  zset    the ref_id's sessions
//	<ns>:{<tag>}:due:<kind>        zset    timed work (expire, redact, purge): session ids by due time (ms)
//	<ns>:{<tag>}:outbox            stream  the shard's events in commit order (reduced: no personal data)
//
// Every key carries a TTL; a write extends those of the shared ones (the
// indexes, the due indexes, the outbox) to the end of what it added.

// SessionShard returns the shard a session id names (its last hex digit),
// ok false for an id that names none.
func SessionShard(id string) (Shard, bool) {
	if len(id) == 0 {
		return 0, false
	}
	d, err := strconv.ParseUint(id[len(id)-1:], 16, 8)
	if err != nil || d >= Shards {
		return 0, false
	}
	return Shard(d), true
}

// ShardHex is the hex digit that ends the ids of shard sh's sessions.
func ShardHex(sh Shard) byte { return "0123456789abcdef"[sh] }

// Session is a session's record.
func (s Space) Session(sh Shard, id string) string { return s.shardPrefix(sh) + "s:" + id }

// Personal is a session's personal data.
func (s Space) Personal(sh Shard, id string) string { return s.shardPrefix(sh) + "p:" + id }

// Token maps a token's hash to its session.
func (s Space) Token(sh Shard, hash string) string { return s.shardPrefix(sh) + "tok:" + hash }

// Ref holds the id of a ref_id's active session.
func (s Space) Ref(sh Shard, refID string) string { return s.shardPrefix(sh) + "ref:" + refID }

// EventDetails holds the parts of a session's events that are not in the
// outbox: what a redaction or a purge must be able to remove.
func (s Space) EventDetails(sh Shard, id string) string { return s.shardPrefix(sh) + "ev:" + id }

// Deliveries holds a session's webhook deliveries.
func (s Space) Deliveries(sh Shard, id string) string { return s.shardPrefix(sh) + "dl:" + id }

// IndexAll lists the shard's live sessions.
func (s Space) IndexAll(sh Shard) string { return s.shardPrefix(sh) + "idx:all" }

// IndexStatus lists the shard's sessions in one status.
func (s Space) IndexStatus(sh Shard, status string) string {
	return s.shardPrefix(sh) + "idx:st:" + status
}

// IndexRef lists a ref_id's sessions.
func (s Space) IndexRef(sh Shard, refID string) string { return s.shardPrefix(sh) + "idx:ref:" + refID }

// Due is the shard's due index of one kind of timed work.
func (s Space) Due(sh Shard, kind string) string { return s.shardPrefix(sh) + "due:" + kind }

// Outbox is the shard's event stream.
func (s Space) Outbox(sh Shard) string { return s.shardPrefix(sh) + "outbox" }
