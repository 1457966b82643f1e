package dispatcher

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// autoPipeline is a go-redis hook that carries the single commands of
// concurrent callers to Redis together, one pipeline per round trip. Asynq
// sends every enqueue, dequeue and completion as its own command; with
// dozens of workers and the relay's concurrent enqueues, sharing round
// trips saves most of the system calls on both sides. A command that finds
// no batch in progress goes at once, so it adds no latency; while a
// pipeline is in flight, the commands that arrive wait for the next one.
//
// Only the client given to Asynq has the hook: Asynq sends no blocking
// and no WATCH commands (its PubSub does not pass through ProcessHook).
type autoPipeline struct {
	exec redis.UniversalClient // runs the pipelines; it has no such hook
	reqs chan *pipedCmd        // unbuffered: a send waits for the loop

	mu   sync.Mutex
	stop chan struct{} // closed while the loop is not running
	done chan struct{} // closed when the loop has returned
}

type pipedCmd struct {
	ctx  context.Context
	cmd  redis.Cmder
	done chan struct{}
}

// maxPipeline bounds the commands of one pipeline.
const maxPipeline = 512

// pipelineTimeout bounds one pipeline's round trip.
const pipelineTimeout = 10 * time.Second

func newAutoPipeline(exec redis.UniversalClient) *autoPipeline {
	stop := make(chan struct{})
	close(stop)
	return &autoPipeline{exec: exec, reqs: make(chan *pipedCmd), stop: stop}
}

// start runs the batching loop until close.
func (a *autoPipeline) start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go a.loop(a.stop, a.done)
}

// close stops the loop; later commands go alone.
func (a *autoPipeline) close() {
	a.mu.Lock()
	stop, done := a.stop, a.done
	a.mu.Unlock()
	select {
	case <-stop:
		return // not running
	default:
	}
	close(stop)
	<-done
}

func (a *autoPipeline) stopped() chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stop
}

func (a *autoPipeline) loop(stop, done chan struct{}) {
	defer close(done)
	batch := make([]*pipedCmd, 0, maxPipeline)
	for {
		select {
		case <-stop:
			return
		case pc := <-a.reqs:
			batch = append(batch[:0], pc)
		}
	fill:
		for len(batch) < maxPipeline {
			select {
			case pc := <-a.reqs:
				batch = append(batch, pc)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), pipelineTimeout)
		// Each command gets its own reply or error.
		_, _ = a.exec.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, pc := range batch {
				_ = p.Process(pc.ctx, pc.cmd)
			}
			return nil
		})
		cancel()
		for _, pc := range batch {
			close(pc.done)
		}
	}
}

func (a *autoPipeline) DialHook(next redis.DialHook) redis.DialHook { return next }

func (a *autoPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (a *autoPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		pc := &pipedCmd{ctx: ctx, cmd: cmd, done: make(chan struct{})}
		select {
		case a.reqs <- pc:
		case <-a.stopped():
			return next(ctx, cmd)
		}
		<-pc.done
		return cmd.Err()
	}
}
