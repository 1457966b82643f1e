package redistest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	opts := SentinelOptions{Options: Options{Password: "default-pw", ACLUser: "app", ACLPassword: "app-pw", AppendOnly: true}}
	s := StartSentinel(t, opts) // logs its ready time

	wantURL := "redis-sentinel://app:app-pw@" + strings.Join(s.SentinelAddrs(), ",") + "/0?master=" + DefaultMasterName
	if got := s.URL(); got != wantURL {
		t.Errorf("URL() = %q, want %q", got, wantURL)
	}
	first, err := s.MasterAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first != s.Nodes()[0].Addr {
		t.Errorf("MasterAddr() = %s, want the first node %s", first, s.Nodes()[0].Addr)
	}

	// The failover client a daemon would build: sentinels, master name and
	// the data nodes' credentials.
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.MasterName(),
		SentinelAddrs: s.SentinelAddrs(),
		Username:      "app",
		Password:      "app-pw",
	})
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatalf("SET before the failover: %v", err)
	}
	// Both replicas hold the write, so the promoted one has it.
	if n, err := c.Wait(ctx, 2, 5*time.Second).Result(); err != nil || n != 2 {
		t.Fatalf("WAIT 2: got %d, %v", n, err)
	}

	killed, err := s.KillMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if killed != first {
		t.Errorf("KillMaster() = %s, want %s", killed, first)
	}
	killedAt := time.Now()
	promoted, err := s.WaitFailover(ctx, killed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover in %s: %s -> %s", time.Since(killedAt).Round(time.Millisecond), killed, promoted)
	if promoted == killed {
		t.Fatalf("WaitFailover() = %s, the killed master", promoted)
	}

	// The client's connection to the killed master is gone; its next
	// attempts ask the sentinels and reach the promoted master.
	err = poll(ctx, 10*time.Second, func(ctx context.Context) error { return c.Set(ctx, "after", "2", 0).Err() })
	if err != nil {
		t.Fatalf("SET after the failover: %v", err)
	}
	if got, err := c.Get(ctx, "before").Result(); got != "1" {
		t.Errorf("GET before after the failover: got %q, %v; want 1", got, err)
	}
	if got, err := s.Client().Get(ctx, "after").Result(); got != "2" {
		t.Errorf("GET after through Client(): got %q, %v; want 2", got, err)
	}

	restartedAt := time.Now()
	if err := s.RestartNode(ctx, killed); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed master back as a replica in %s", time.Since(restartedAt).Round(time.Millisecond))
	if n, err := c.Wait(ctx, 2, 5*time.Second).Result(); err != nil || n != 2 {
		t.Errorf("WAIT 2 after the restart: got %d replicas, %v; want 2", n, err)
	}
	old := s.Node(killed).Client()
	if role, err := old.Do(ctx, "ROLE").Slice(); err != nil || role[0] != "slave" {
		t.Errorf("ROLE of the restarted node: got %v, %v; want slave", role, err)
	}
	if got, err := old.Get(ctx, "after").Result(); got != "2" {
		t.Errorf("GET after on the restarted node: got %q, %v; want 2", got, err)
	}
	if now, err := s.MasterAddr(ctx); err != nil || now != promoted {
		t.Errorf("MasterAddr() after the restart: got %s, %v; want %s", now, err, promoted)
	}
}
