package dispatcher_test

import (
	"context"
	"log"
	"net/netip"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/lifecycle"
)

// Wiring a dispatcher: it reads the lifecycle's outbox and event details,
// delivers to endpoints with filters and a secret rotation, and on
// shutdown lets deliveries in flight finish within its deadline. (Compiled,
// not run: it needs Redis.)
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", PoolSize: 200})
	defer rdb.Close()
	svc := lifecycle.New(rdb, lifecycle.Config{})
	d, err := dispatcher.New(rdb, svc, dispatcher.Config{
		Endpoints: []dispatcher.Endpoint{
			{ID: "default", URL: "https://hooks.example.com/idv", Secrets: []string{
				"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // current
				"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", // previous, until integrators switch
			}},
			{ID: "decisions", URL: "https://risk.example.com/hook", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
				Events: []string{"session.approved", "session.declined"}},
		},
		APIKey:        "platform",
		AllowNetworks: []netip.Prefix{}, // none: public addresses only
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := d.Start(ctx); err != nil {
		log.Fatal(err)
	}
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Shutdown(shutdown); err != nil {
		log.Print(err) // first attempts cut off are claimed by another replica or the next process; retries are given back to Asynq
	}
}
