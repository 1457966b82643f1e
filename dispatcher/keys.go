package dispatcher

import (
	"strconv"
	"strings"
)

// The dispatcher's Redis keys are named by internal/keyspace: a session's
// deliveries (a hash in the session's shard, field "<event id>~<endpoint
// id>"), the endpoints' disabled marks, the shards' outbox streams it reads
// through the consumer group relayGroup.
//
// Asynq's own keys, in the layout of Asynq v0.26 (internal/base), which the
// orphan sweep (recover.go) reads and changes:
//
//	asynq:{<queue>}:lease    zset  active task ids, score lease expiry (unix s)
//	asynq:{<queue>}:active   list  active task ids
//	asynq:{<queue>}:pending  list  pending task ids, the next one at the tail
//	asynq:{<queue>}:t:<id>   hash  a task: msg, state, pending_since

// relayGroup is the outbox consumer group of every dispatcher replica.
const relayGroup = "dispatcher"

func asynqQueuePrefix(queue string) string { return "asynq:{" + queue + "}:" }
func asynqLeaseKey(queue string) string    { return asynqQueuePrefix(queue) + "lease" }
func asynqActiveKey(queue string) string   { return asynqQueuePrefix(queue) + "active" }
func asynqPendingKey(queue string) string  { return asynqQueuePrefix(queue) + "pending" }
func asynqTaskPrefix(queue string) string  { return asynqQueuePrefix(queue) + "t:" }

// Delivery ids are "<session id>~<event id>~<endpoint id>": unique per
// event and endpoint, URL-safe (RFC 3986 unreserved characters only), and
// they name the session, so a delivery's record is found from its id alone.
const idSep = "~"

// deliveryID returns the id of an event's delivery to an endpoint, or ""
// when a part holds a character outside [A-Za-z0-9_-].
func deliveryID(sessionID, eventID, endpointID string) string {
	if !idPart(sessionID) || !idPart(eventID) || !idPart(endpointID) {
		return ""
	}
	return sessionID + idSep + eventID + idSep + endpointID
}

// parseDeliveryID splits a delivery id into its parts.
func parseDeliveryID(id string) (sessionID, eventID, endpointID string, ok bool) {
	if len(id) > 256 {
		return "", "", "", false
	}
	parts := strings.Split(id, idSep)
	if len(parts) != 3 || !idPart(parts[0]) || !idPart(parts[1]) || !idPart(parts[2]) {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// recordField is a delivery's field in its session's deliveries hash.
func recordField(eventID, endpointID string) string { return eventID + idSep + endpointID }

// idPart reports whether s is 1 to 80 of [A-Za-z0-9_-].
func idPart(s string) bool {
	if s == "" || len(s) > 80 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// replayTaskID is the TaskID of a delivery's n-th replay.
func replayTaskID(deliveryID string, n int64) string {
	return deliveryID + idSep + "r" + strconv.FormatInt(n, 10)
}
