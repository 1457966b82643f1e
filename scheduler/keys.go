package scheduler

import (
	"strconv"
	"strings"
	"time"

	"github.com/sessiond/sessiond/lifecycle"
)

// Every name the scheduler puts into Redis is built here. Its own data
// lives in Asynq's keys (asynq:{<queue>}:...); the due indexes it claims
// from belong to the lifecycle.
//
//	queue sessiond:expiry       expiry tasks, TaskID expire:<session id>:<version>
//	queue sessiond:maintenance  redaction and purge tasks, TaskID
//	                            redact|purge:<session id>:<version>, and
//	                            sweep tasks, TaskID sweep:<tick unix ms>
//
// A work task's payload is only its due time (unix ms, decimal): the kind,
// session and version are in its TaskID, which keeps a pending session's
// task small.

// The scheduler's Asynq queues. Other Asynq servers on the same Redis (the
// dispatcher's) must not list them.
const (
	QueueExpiry      = "sessiond:expiry"
	QueueMaintenance = "sessiond:maintenance"
)

// Asynq task types.
const (
	typeExpire = "sessiond:expire"
	typeRedact = "sessiond:redact"
	typePurge  = "sessiond:purge"
	typeSweep  = "sessiond:sweep"
)

// kinds lists the kinds of timed work in the order a sweep takes them.
var kinds = []lifecycle.WorkKind{lifecycle.WorkExpire, lifecycle.WorkRedact, lifecycle.WorkPurge}

// dueKey is the lifecycle's due index of a kind of work.
func dueKey(k lifecycle.WorkKind) string {
	switch k {
	case lifecycle.WorkExpire:
		return lifecycle.ExpireDueKey
	case lifecycle.WorkRedact:
		return lifecycle.RedactDueKey
	case lifecycle.WorkPurge:
		return lifecycle.PurgeDueKey
	}
	return ""
}

// taskType is the Asynq task type of a kind of work.
func taskType(k lifecycle.WorkKind) string {
	switch k {
	case lifecycle.WorkExpire:
		return typeExpire
	case lifecycle.WorkRedact:
		return typeRedact
	case lifecycle.WorkPurge:
		return typePurge
	}
	return ""
}

// queue is the Asynq queue of a kind of work.
func queue(k lifecycle.WorkKind) string {
	if k == lifecycle.WorkExpire {
		return QueueExpiry
	}
	return QueueMaintenance
}

// workTaskID is the TaskID of one piece of work: a later version of the
// session gets a new task, and a second Schedule of the same version is a
// conflict, which is fine.
func workTaskID(k lifecycle.WorkKind, sessionID string, version int64) string {
	return string(k) + ":" + sessionID + ":" + strconv.FormatInt(version, 10)
}

// parseWorkTaskID splits a workTaskID.
func parseWorkTaskID(taskID string) (k lifecycle.WorkKind, sessionID string, version int64, ok bool) {
	kind, rest, ok1 := strings.Cut(taskID, ":")
	id, v, ok2 := strings.Cut(rest, ":")
	version, err := strconv.ParseInt(v, 10, 64)
	if !ok1 || !ok2 || err != nil || id == "" {
		return "", "", 0, false
	}
	return lifecycle.WorkKind(kind), id, version, true
}

// sweepTaskID is the TaskID of one sweep tick, the same on every replica.
func sweepTaskID(tick time.Time) string {
	return "sweep:" + strconv.FormatInt(tick.UnixMilli(), 10)
}
