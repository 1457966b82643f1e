package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// recorder writes the workers' attempt records, many per Redis round trip
// (group commit): a write waits for the pipeline that carries it, so a
// worker finishes only once its attempt is recorded, but concurrent workers
// share round trips. Under light load a pipeline carries one write and
// adds no delay.
type recorder struct {
	store *store
	reqs  chan *attemptWrite
	done  chan struct{}
}

// maxRecordBatch bounds the writes of one pipeline.
const maxRecordBatch = 256

type attemptWrite struct {
	sessionID, id, status string
	attempt               int
	js                    []byte
	result                chan error // buffered
}

func newRecorder(s *store) *recorder {
	return &recorder{store: s, reqs: make(chan *attemptWrite, maxRecordBatch), done: make(chan struct{})}
}

// run writes until close; it returns once every accepted write is done.
func (r *recorder) run() {
	defer close(r.done)
	batch := make([]*attemptWrite, 0, maxRecordBatch)
	for w := range r.reqs {
		batch = append(batch[:0], w)
	fill:
		for len(batch) < maxRecordBatch {
			select {
			case w, ok := <-r.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, w)
			default:
				break fill
			}
		}
		r.flush(batch)
	}
}

// close stops run after the writes already sent. No write may follow.
func (r *recorder) close() {
	close(r.reqs)
	<-r.done
}

func (r *recorder) flush(batch []*attemptWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	now := strconv.FormatInt(r.store.now().UnixMilli(), 10)
	cmds, err := r.store.pipeline(ctx, func(p redis.Pipeliner) {
		for _, w := range batch {
			attemptScript.EvalSha(ctx, p, []string{deliveryKey(w.sessionID, w.id)},
				w.status, w.attempt, w.js, now, "", maxRecordFields)
		}
	})
	for i, w := range batch {
		switch {
		case i < len(cmds):
			w.result <- cmds[i].Err()
		default:
			w.result <- err
		}
	}
}

// write records an attempt and the delivery's new status.
func (r *recorder) write(ctx context.Context, sessionID, id, status string, a *Attempt) error {
	js, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	w := &attemptWrite{sessionID: sessionID, id: id, status: status, attempt: a.Attempt, js: js, result: make(chan error, 1)}
	select {
	case r.reqs <- w:
	case <-ctx.Done():
		return fmt.Errorf("record attempt: %w", ctx.Err())
	}
	select {
	case err := <-w.result:
		if err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("record attempt: %w", ctx.Err())
	}
}
