package dispatcher

import (
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
)

// Concurrent commands through the hook each get their own answer, errors
// included, before start, while running and after close.
func TestAutoPipeline(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	exec := srv.Client()
	hooked := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = hooked.Close() })
	ap := newAutoPipeline(exec)
	hooked.AddHook(ap)
	ctx := t.Context()

	run := func(phase string) {
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Go(func() {
				key := phase + ":" + strconv.Itoa(i)
				if err := hooked.Set(ctx, key, i, 0).Err(); err != nil {
					t.Errorf("SET %s: %v", key, err)
				}
				if got, err := hooked.Get(ctx, key).Int(); err != nil || got != i {
					t.Errorf("GET %s = %d, %v", key, got, err)
				}
				if err := hooked.Get(ctx, key+":missing").Err(); err != redis.Nil {
					t.Errorf("GET missing = %v, want redis.Nil", err)
				}
				if err := hooked.Incr(ctx, key).Err(); err != nil {
					t.Errorf("INCR %s: %v", key, err)
				}
				if err := hooked.HSet(ctx, key, "f", "v").Err(); err == nil {
					t.Errorf("HSET on a string: no error")
				}
			})
		}
		wg.Wait()
	}
	run("before")
	ap.start()
	run("running")
	ap.close()
	run("after")
	ap.close() // twice is fine
}
