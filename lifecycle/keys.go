package lifecycle

import (
	"fmt"
	"strings"
)

// Every Redis key sessiond's lifecycle uses is built here. Per-session keys
// carry the hash tag {<session id>} so a session's own keys share one slot.
//
//	sessiond:{<id>}:session      string  the session record (no personal data)
//	sessiond:{<id>}:pii          string  person and metadata; TTL ends with retention
//	sessiond:token:<sha256 hex>  string  session id; TTL is the token lifetime
//	sessiond:ref:<ref_id>        string  id of the ref_id's active session
//	sessiond:idx:all             zset    every live session, member indexMember
//	sessiond:idx:ref:<ref_id>    zset    the ref_id's sessions
//	sessiond:idx:status:<status> zset    sessions by status
//	sessiond:due:expire          zset    pending sessions, score expires_at (ms)
//	sessiond:due:redact          zset    terminal sessions, score redaction time (ms)
//	sessiond:due:purge           zset    every session, score when its data goes (ms)
//	sessiond:outbox              stream  events, in commit order
const keyPrefix = "sessiond:"

func sessionKey(id string) string { return keyPrefix + "{" + id + "}:session" }
func piiKey(id string) string     { return keyPrefix + "{" + id + "}:pii" }
func tokenKey(hash string) string { return keyPrefix + "token:" + hash }
func refKey(refID string) string  { return keyPrefix + "ref:" + refID }

const (
	allIndexKey = keyPrefix + "idx:all"
	// OutboxKey is the stream every event is appended to; the dispatcher
	// consumes it.
	OutboxKey = keyPrefix + "outbox"
	// ExpireDueKey, RedactDueKey and PurgeDueKey are the due indexes the
	// scheduler polls: sorted sets of session ids scored by due time in
	// unix milliseconds.
	ExpireDueKey = keyPrefix + "due:expire"
	RedactDueKey = keyPrefix + "due:redact"
	PurgeDueKey  = keyPrefix + "due:purge"
)

func refIndexKey(refID string) string { return keyPrefix + "idx:ref:" + refID }
func statusIndexKey(s Status) string  { return keyPrefix + "idx:status:" + string(s) }

// indexMember is a session's member in the list indexes. Every member has
// score 0 and sorts by created time then id, so a lexicographic range is a
// stable, newest-first cursor.
func indexMember(s *Session) string {
	return fmt.Sprintf("%013d:%s", s.CreatedAt.UnixMilli(), s.ID)
}

// memberID is the session id inside an index member.
func memberID(m string) string {
	_, id, _ := strings.Cut(m, ":")
	return id
}
