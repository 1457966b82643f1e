package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
)

// TestErasureLeavesNoMarkers is the contract's "erasure you can check",
// end to end on a running daemon, on one Redis and on a 3-master cluster.
// Two sessions carry unique markers in every field (ref_id, person,
// metadata, tags, the decision's reason) and were created with an
// Idempotency-Key, while the receiver is down so that their deliveries sit
// in Asynq (retrying, and one archived as dead). One is redacted, the other
// deleted and left to its purge. Then every key and value in Redis, of
// every type and on every master, Asynq's included, is searched: the
// redacted session's removed fields are nowhere, the purged session's
// ref_id, personal data, token and stored response are nowhere, and no key
// is named after it. Replaying a purged session's delivery answers 404.
func TestErasureLeavesNoMarkers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) (url string, rdb redis.UniversalClient)
	}{
		{"single", func(t *testing.T) (string, redis.UniversalClient) {
			s := redistest.Start(t)
			return s.URL(), s.Client()
		}},
		{"cluster", func(t *testing.T) (string, redis.UniversalClient) {
			c := redistest.StartCluster(t)
			return c.URL(), c.Client()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, rdb := tc.start(t)
			testErasure(t, url, rdb)
		})
	}
}

// endpointConfig matches the keys of the endpoints managed through the API.
var endpointConfig = regexp.MustCompile(`:ep:(api|ver|disabled)$`)

// erasureMarkers are one session's unique strings, one per field.
type erasureMarkers struct {
	ref, person, metadata, tag, reason string
}

func newErasureMarkers(who string) erasureMarkers {
	m := func(field string) string {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		return "MARK-" + who + "-" + field + "-" + hex.EncodeToString(b)
	}
	return erasureMarkers{ref: m("ref"), person: m("person"), metadata: m("metadata"), tag: m("tag"), reason: m("reason")}
}

func testErasure(t *testing.T, url string, rdb redis.UniversalClient) {
	ctx := context.Background()
	// The receiver is down: a port that refuses connections.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String() + "/hooks"
	l.Close()
	d := startDaemonAt(t, url, map[string]string{
		"SESSIOND_WEBHOOK_URL":            down,
		"SESSIOND_WEBHOOK_SECRET":         hmacSecret1,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
		"SESSIOND_WEBHOOK_RETRY_SCHEDULE": "100ms,1h",
		"SESSIOND_PURGE_AFTER":            "4s",
		"SESSIOND_SWEEP_EVERY":            "1s",
	})

	redacted, deleted := newErasureMarkers("redacted"), newErasureMarkers("deleted")
	drive := func(m erasureMarkers) (id, token string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{
			"ref_id":   m.ref,
			"person":   map[string]string{"first_name": m.person},
			"metadata": map[string]string{"note": m.metadata},
		})
		req, err := http.NewRequest(http.MethodPost, d.URL+"/v1/sessions", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "idem-"+m.ref)
		signRequest(req, testAPIKey, testAPISecret, body)
		code, b := d.do(req)
		var s struct{ ID, Token string }
		if code != http.StatusCreated || json.Unmarshal(b, &s) != nil || s.ID == "" {
			t.Fatalf("create: %d %s", code, b)
		}
		for _, step := range []struct {
			method, path string
			body         any
		}{
			{http.MethodPatch, "", map[string]any{"tags": []string{m.tag}}},
			{http.MethodPost, "/status", map[string]string{"status": "started"}},
			{http.MethodPost, "/status", map[string]string{"status": "submitted"}},
			{http.MethodPost, "/decision", map[string]string{"status": "declined", "reason": m.reason}},
		} {
			if code, b := d.call(step.method, "/v1/sessions/"+s.ID+step.path, s.ID, step.body); code != http.StatusOK {
				t.Fatalf("%s %s: %d %s", step.method, step.path, code, b)
			}
		}
		return s.ID, s.Token
	}
	redactedID, _ := drive(redacted)
	deletedID, deletedToken := drive(deleted)

	// Wait until each session's four deliveries have failed their first
	// attempt and sit in Asynq as retries; archive one of each session
	// (a dead delivery).
	ins := asynq.NewInspectorFromRedisClient(rdb)
	retries := waitRetries(t, ins, 8)
	archived := map[string]bool{}
	for _, r := range retries {
		for _, id := range []string{redactedID, deletedID} {
			if !archived[id] && strings.Contains(string(r.task.Payload), id) {
				if err := ins.ArchiveTask(r.queue, r.task.ID); err != nil {
					t.Fatalf("archive %s: %v", r.task.ID, err)
				}
				archived[id] = true
			}
		}
	}
	if len(archived) != 2 {
		t.Fatalf("retry payloads name %d of the 2 sessions; want one of each to archive", len(archived))
	}
	deliveryID := firstDelivery(t, d, deletedID)

	// Before the erasure every marker is somewhere: the search can find
	// them.
	before := dumpRedis(t, rdb)
	for _, m := range []erasureMarkers{redacted, deleted} {
		for _, v := range []string{m.ref, m.person, m.metadata, m.tag, m.reason} {
			if !strings.Contains(before, v) {
				t.Fatalf("marker %s is not in Redis before the erasure: the dump misses it", v)
			}
		}
	}

	if code, b := d.call(http.MethodPost, "/v1/sessions/"+redactedID+"/redact", redactedID, nil); code != http.StatusOK {
		t.Fatalf("redact: %d %s", code, b)
	}
	if code, b := d.call(http.MethodDelete, "/v1/sessions/"+deletedID, deletedID, nil); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, b)
	}

	// The purge: PURGE_AFTER (4s) after the delete, found by the sweep.
	deadline := time.Now().Add(30 * time.Second)
	for {
		keys, err := redistest.Keys(ctx, rdb, "*"+deletedID+"*")
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys named after the deleted session 30s after its delete: %v", keys)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The purge and the drop of its deliveries are one step apart: wait
	// until no Asynq task names it either.
	deadline = time.Now().Add(15 * time.Second)
	for strings.Contains(dumpRedis(t, rdb), deletedID+"~") || tasksNaming(t, ins, deletedID) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Asynq tasks of the purged session remain: %d", tasksNaming(t, ins, deletedID))
		}
		time.Sleep(200 * time.Millisecond)
	}

	after := dumpRedis(t, rdb)
	// Every key of sessiond's carries a TTL: nothing outlives its policy
	// even if no sweep ever runs again. (Asynq's own queue keys are
	// Asynq's.)
	keys, err := redistest.Keys(ctx, rdb, "sessiond:*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if endpointConfig.MatchString(k) {
			continue // the endpoints of the API are configuration, kept until deleted
		}
		if ttl, err := rdb.PTTL(ctx, k).Result(); err == nil && ttl == -1 {
			t.Errorf("key %s (%s) has no TTL", k, rdb.Type(ctx, k).Val())
		}
	}
	gone := map[string]string{
		"redacted session's person":   redacted.person,
		"redacted session's metadata": redacted.metadata,
		"redacted session's tags":     redacted.tag,
		"redacted session's reason":   redacted.reason,
		"purged session's ref_id":     deleted.ref,
		"purged session's person":     deleted.person,
		"purged session's metadata":   deleted.metadata,
		"purged session's tags":       deleted.tag,
		"purged session's reason":     deleted.reason,
		"purged session's token":      deletedToken,
	}
	for what, marker := range gone {
		if i := strings.Index(after, marker); i >= 0 {
			t.Errorf("%s is still in Redis: …%s…", what, after[max(0, i-200):min(len(after), i+len(marker)+50)])
		}
	}
	if !strings.Contains(after, redacted.ref) {
		t.Errorf("the redacted session's ref_id is gone: a redaction keeps it")
	}
	// The feed keeps the purged session's events, reduced.
	if !strings.Contains(after, deletedID) {
		t.Errorf("the purged session's id is nowhere: the events feed should keep its reduced events")
	}

	if code, b := d.call(http.MethodPost, "/v1/deliveries/"+deliveryID+"/replay", "", nil); code != http.StatusNotFound {
		t.Errorf("replay of a purged session's delivery: %d %s, want 404", code, b)
	}
	if code, b := d.call(http.MethodGet, "/v1/sessions/"+redactedID, redactedID, nil); code != http.StatusOK || bytes.Contains(b, []byte("MARK-redacted-tag")) {
		t.Errorf("the redacted session: %d %s", code, b)
	}
}

type queuedTask struct {
	queue string
	task  *asynq.TaskInfo
}

// waitRetries waits until n tasks are in Asynq's retry state, over every
// queue, and returns them.
func waitRetries(t *testing.T, ins *asynq.Inspector, n int) []queuedTask {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out []queuedTask
		queues, err := ins.Queues()
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range queues {
			ts, err := ins.ListRetryTasks(q, asynq.PageSize(1000))
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range ts {
				out = append(out, queuedTask{q, task})
			}
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries in retry after 20s, want %d", len(out), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tasksNaming counts the Asynq tasks, in any state, whose id or payload
// holds s.
func tasksNaming(t *testing.T, ins *asynq.Inspector, s string) int {
	t.Helper()
	queues, err := ins.Queues()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queues {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			ins.ListPendingTasks, ins.ListActiveTasks, ins.ListScheduledTasks,
			ins.ListRetryTasks, ins.ListArchivedTasks, ins.ListCompletedTasks,
		} {
			ts, err := list(q, asynq.PageSize(1000))
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range ts {
				if strings.Contains(task.ID, s) || strings.Contains(string(task.Payload), s) {
					n++
				}
			}
		}
	}
	return n
}

// firstDelivery returns the id of one of the session's deliveries.
func firstDelivery(t *testing.T, d *testDaemon, sessionID string) string {
	t.Helper()
	code, b := d.call(http.MethodGet, "/v1/sessions/"+sessionID+"/deliveries", sessionID, nil)
	var list struct {
		Deliveries []struct{ ID string } `json:"deliveries"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Deliveries) == 0 {
		t.Fatalf("deliveries of %s: %d %s", sessionID, code, b)
	}
	return list.Deliveries[0].ID
}

// dumpRedis is every key and value in Redis, every master of a cluster.
func dumpRedis(t *testing.T, rdb redis.UniversalClient) string {
	t.Helper()
	s, err := redistest.Contents(context.Background(), rdb, "*")
	if err != nil {
		t.Fatal(err)
	}
	return s
}
