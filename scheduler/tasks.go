package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

const (
	// workMaxRetry is how often a failing work task is retried before Asynq
	// archives it (the sweep still repairs the work). Early runs do not
	// count.
	workMaxRetry = 10
	// workTimeout bounds one work task: a Run takes milliseconds.
	workTimeout = 30 * time.Second
	// maxSupersededVersions bounds how many older versions a purge looks
	// for when it deletes a session's superseded tasks.
	maxSupersededVersions = 64
)

// enqueueWork enqueues the Asynq task for w. Asynq keeps due times in whole
// seconds and runs a task once its second has begun, so the task is set for
// the first whole second not before w.At: it never comes early by Asynq's
// rounding (a skewed clock can still bring it early; the handler checks).
func (s *Scheduler) enqueueWork(ctx context.Context, w lifecycle.Work) error {
	payload := []byte(strconv.FormatInt(w.At.UnixMilli(), 10))
	processAt := w.At.Truncate(time.Second)
	if processAt.Before(w.At) {
		processAt = processAt.Add(time.Second)
	}
	_, err := s.client.EnqueueContext(ctx, asynq.NewTask(taskType(w.Kind), payload),
		asynq.Queue(queue(w.Kind)),
		asynq.TaskID(workTaskID(w.Kind, w.SessionID, w.Version)),
		asynq.ProcessAt(processAt),
		asynq.MaxRetry(workMaxRetry),
		asynq.Timeout(workTimeout),
	)
	if err != nil {
		return fmt.Errorf("enqueue %s task: %w", w.Kind, err)
	}
	return nil
}

// notDueError is a work task that ran before its due time. It is retried
// after the remainder and does not count as a failure.
type notDueError struct{ wait time.Duration }

func (e *notDueError) Error() string {
	return fmt.Sprintf("not due for another %s", e.wait)
}

// retryDelay is Asynq's RetryDelayFunc. A task that came early is retried
// a whole second after the remainder, because Asynq truncates the retry time
// to whole seconds; anything else backs off as Asynq does by default.
func retryDelay(n int, err error, t *asynq.Task) time.Duration {
	var nd *notDueError
	if errors.As(err, &nd) {
		return nd.wait + time.Second
	}
	return asynq.DefaultRetryDelayFunc(n, err, t)
}

// isFailure is Asynq's IsFailure: an early run is not a failure.
func isFailure(err error) bool {
	var nd *notDueError
	return !errors.As(err, &nd)
}

// taskFailed is Asynq's ErrorHandler.
func (s *Scheduler) taskFailed(ctx context.Context, t *asynq.Task, err error) {
	if !isFailure(err) {
		return
	}
	id, _ := asynq.GetTaskID(ctx)
	s.log.Warn("scheduler task failed", "task_type", t.Type(), "task_id", id, "err", err.Error())
}

// workHandler handles the work tasks of kind k.
func (s *Scheduler) workHandler(k lifecycle.WorkKind) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		s.handlers.Add(1)
		defer s.handlers.Done()
		taskID, _ := asynq.GetTaskID(ctx)
		kind, id, version, ok := parseWorkTaskID(taskID)
		at, err := strconv.ParseInt(string(t.Payload()), 10, 64)
		if !ok || kind != k || err != nil {
			return fmt.Errorf("%s task %q with payload %q: %w", k, taskID, t.Payload(), asynq.SkipRetry)
		}
		if wait := time.UnixMilli(at).Sub(s.now()); wait > 0 {
			if s.hooks.notDue != nil {
				s.hooks.notDue(k, id)
			}
			return &notDueError{wait: wait}
		}
		if k != lifecycle.WorkPurge {
			// Most expiry tasks find the poller was first: the due index no
			// longer lists the session, and one ZSCORE saves a Run. (A
			// purge task always runs: it also drops superseded tasks.)
			_, err := s.rdb.ZScore(ctx, dueKey(k), id).Result()
			if errors.Is(err, redis.Nil) {
				if s.hooks.ran != nil {
					s.hooks.ran("task", k, id, false)
				}
				return nil
			}
		}
		changed, err := s.svc.Run(ctx, k, id)
		if err != nil {
			return fmt.Errorf("%s session %s: %w", k, id, err)
		}
		if s.hooks.ran != nil {
			s.hooks.ran("task", k, id, changed)
		}
		if k == lifecycle.WorkPurge {
			s.dropSuperseded(ctx, id, version)
		}
		return nil
	}
}

// dropSuperseded deletes the expiry and redaction tasks a purged session
// may still have waiting (a task of an older version is not replaced, it
// just finds nothing to do when it runs), so nothing naming the session
// stays in Redis. A purge task carries the session's last version; a
// session has no task of a later one.
func (s *Scheduler) dropSuperseded(ctx context.Context, id string, version int64) {
	for v := version; v >= 1 && v > version-maxSupersededVersions; v-- {
		for _, k := range []lifecycle.WorkKind{lifecycle.WorkExpire, lifecycle.WorkRedact} {
			if ctx.Err() != nil {
				return
			}
			err := s.inspector.DeleteTask(queue(k), workTaskID(k, id, v))
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				s.log.Warn("drop superseded task", "kind", string(k), "session_id", id, "err", err.Error())
			}
		}
	}
}
