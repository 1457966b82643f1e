package lifecycle

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// TestCreateKeys checks the exact keys one create writes, all in the shard
// of the ref_id (one cluster slot), which the session id and the token
// name too.
func TestCreateKeys(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "ref-1", Person: json.RawMessage(`{"name":"A"}`)})
		sh := ShardOfRef("ref-1")
		if got := e.shardOf(c.ID); got != sh {
			t.Fatalf("session id %s names shard %d, the ref_id's is %d", c.ID, got, sh)
		}
		if got, ok := TokenShard(c.Token); !ok || got != sh {
			t.Fatalf("token names shard %d (%v), want %d", got, ok, sh)
		}
		k := e.ks
		want := []string{
			k.Session(sh, c.ID),
			k.Personal(sh, c.ID),
			k.Token(sh, storedTokenHash(c.Token)),
			k.Ref(sh, "ref-1"),
			k.EventDetails(sh, c.ID),
			k.IndexAll(sh),
			k.IndexRef(sh, "ref-1"),
			k.IndexStatus(sh, string(StatusCreated)),
			k.Due(sh, string(WorkExpire)), // no purge entry while pending
			k.Outbox(sh),
		}
		slices.Sort(want)
		got := e.keys("*")
		if !slices.Equal(got, want) {
			t.Errorf("keys after create:\n got %v\nwant %v", got, want)
		}
		for _, key := range got {
			if !strings.Contains(key, "{"+keyspace.Tag(sh)+"}") {
				t.Errorf("key %s is outside the shard's hash tag", key)
			}
		}
		if !c.New || c.Status != StatusCreated {
			t.Errorf("create: new=%v status=%s", c.New, c.Status)
		}
		if c.ExpiresAt == nil || !c.ExpiresAt.Equal(testStart.Add(testSessionTTL)) {
			t.Errorf("expires_at %v, want %v", c.ExpiresAt, testStart.Add(testSessionTTL))
		}
		if !c.TokenExpiresAt.Equal(testStart.Add(testTokenTTL)) {
			t.Errorf("token_expires_at %v, want %v", c.TokenExpiresAt, testStart.Add(testTokenTTL))
		}
		e.checkSession(c.ID)
		// The record keeps neither what its key names (the id) nor
		// retain_from while it is updated_at.
		if raw := e.rdb.Get(e.ctx, k.Session(sh, c.ID)).Val(); strings.Contains(raw, c.ID) || strings.Contains(raw, "retain_from") {
			t.Errorf("stored record %s", raw)
		}

		var ve *ValidationError
		for _, bad := range []CreateRequest{
			{},
			{RefID: "a\u202eb"},
			{RefID: strings.Repeat("x", 256)},
			{RefID: "r", FlowID: "f\x00"},
			{RefID: "r", Person: json.RawMessage(`[1]`)},
			{RefID: "r", Metadata: json.RawMessage(`"s"`)},
		} {
			if _, err := e.svc.Create(e.ctx, bad); !errors.As(err, &ve) {
				t.Errorf("Create(%+v): %v, want a ValidationError", bad, err)
			}
		}
		if got := e.keys("*"); !slices.Equal(got, want) {
			t.Errorf("refused creates wrote keys: %v", got)
		}
	})
}

// TestIdempotentCreate checks that a create for a ref_id with an active
// session returns it with a later expires_at and a fresh token, and
// revokes the old token.
func TestIdempotentCreate(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		first := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"A"}`)})
		e.clock.Advance(10 * time.Minute)
		again, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"B"}`)})
		if err != nil {
			t.Fatal(err)
		}
		if again.New || again.ID != first.ID {
			t.Fatalf("second create: new=%v id=%s, want the first session %s", again.New, again.ID, first.ID)
		}
		wantExp := testStart.Add(10*time.Minute + testSessionTTL)
		if again.ExpiresAt == nil || !again.ExpiresAt.Equal(wantExp) {
			t.Errorf("expires_at %v, want extended to %v", again.ExpiresAt, wantExp)
		}
		if !again.TokenExpiresAt.Equal(testStart.Add(10*time.Minute + testTokenTTL)) {
			t.Errorf("token_expires_at %v", again.TokenExpiresAt)
		}
		if again.Token == "" || again.Token == first.Token {
			t.Errorf("token not reissued: %q", again.Token)
		}
		if _, err := e.svc.SessionForToken(e.ctx, first.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("old token: %v, want ErrNotFound", err)
		}
		s, err := e.svc.SessionForToken(e.ctx, again.Token)
		if err != nil || s.ID != first.ID {
			t.Errorf("new token: %v, %v", s, err)
		}
		if string(again.Person) != `{"name":"A"}` {
			t.Errorf("person %s: an idempotent create must not overwrite the session", again.Person)
		}
		if got := e.eventTypes(first.ID); !slices.Equal(got, []string{"session.created"}) {
			t.Errorf("events %v, want only session.created", got)
		}
		if got := len(e.keys("*:tok:*")); got != 1 {
			t.Errorf("%d token keys, want 1", got)
		}
		e.checkSession(first.ID)

		// Past its time limit the session is not active any more: a create
		// makes a new one and the old one expires with its event.
		e.clock.Advance(testSessionTTL)
		third := e.create("ref")
		if !third.New || third.ID == first.ID {
			t.Fatalf("create after expiry: new=%v id=%s", third.New, third.ID)
		}
		if got := e.eventTypes(first.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
			t.Errorf("old session events %v", got)
		}
		e.checkSession(first.ID)
		e.checkSession(third.ID)
	})
}

// TestForceCreation checks that force_creation makes a new session and
// cancels the active one, with its event.
func TestForceCreation(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		old := e.create("ref")
		if _, err := e.svc.Progress(e.ctx, old.ID, StatusSubmitted); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Second)
		c, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", ForceCreation: true})
		if err != nil {
			t.Fatal(err)
		}
		if !c.New || c.ID == old.ID {
			t.Fatalf("forced create: new=%v id=%s", c.New, c.ID)
		}
		if s := e.get(old.ID); s.Status != StatusCanceled {
			t.Errorf("old session %s, want canceled", s.Status)
		}
		if got := e.eventTypes(old.ID); !slices.Equal(got, []string{"session.created", "session.submitted", "session.canceled"}) {
			t.Errorf("old session events %v", got)
		}
		if _, err := e.svc.SessionForToken(e.ctx, old.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("old token still works: %v", err)
		}
		if owner := e.rdb.Get(e.ctx, e.ks.Ref(ShardOfRef("ref"), "ref")).Val(); owner != c.ID {
			t.Errorf("ref key -> %s, want %s", owner, c.ID)
		}
		page, err := e.svc.List(e.ctx, ListQuery{RefID: "ref"})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(page.Sessions); !slices.Equal(got, []string{c.ID, old.ID}) {
			t.Errorf("list by ref: %v, want %v", got, []string{c.ID, old.ID})
		}
		e.checkSession(old.ID)
		e.checkSession(c.ID)

		// With no active session, force_creation is a plain create.
		if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		d, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", ForceCreation: true})
		if err != nil || !d.New {
			t.Fatalf("forced create without active session: %+v, %v", d, err)
		}
		if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.canceled"}) {
			t.Errorf("canceled session got events %v", got)
		}
		e.checkSession(d.ID)
	})
}

// TestConcurrentCreates races creates for one ref_id against a real Redis:
// exactly one active session must remain, with one live token.
func TestConcurrentCreates(t *testing.T) {
	for _, force := range []bool{false, true} {
		name := "idempotent"
		if force {
			name = "forced"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forEachTopology(t, func(t *testing.T, e *env) {
				const n = 50
				var wg sync.WaitGroup
				results := make([]*Created, n)
				errs := make([]error, n)
				start := make(chan struct{})
				for i := range n {
					wg.Go(func() {
						<-start
						results[i], errs[i] = e.svc.Create(e.ctx, CreateRequest{RefID: "race", ForceCreation: force})
					})
				}
				close(start)
				wg.Wait()
				news := 0
				seen := map[string]bool{}
				for i := range n {
					if errs[i] != nil {
						t.Fatalf("create %d: %v", i, errs[i])
					}
					seen[results[i].ID] = true
					if results[i].New {
						news++
					}
				}
				members := e.rdb.ZRange(e.ctx, e.ks.IndexRef(ShardOfRef("race"), "race"), 0, -1).Val()
				active := 0
				var activeID string
				for _, m := range members {
					s := e.get(memberID(m))
					if s.Status.Active() {
						active++
						activeID = s.ID
					}
					e.checkSession(s.ID)
				}
				if active != 1 {
					t.Fatalf("%d active sessions for the ref_id, want 1", active)
				}
				if owner := e.rdb.Get(e.ctx, e.ks.Ref(ShardOfRef("race"), "race")).Val(); owner != activeID {
					t.Errorf("ref key -> %s, active session %s", owner, activeID)
				}
				if got := len(e.keys("*:tok:*")); got != 1 {
					t.Errorf("%d live tokens, want 1", got)
				}
				if force {
					if news != n || len(seen) != n || len(members) != n {
						t.Errorf("forced: %d new, %d ids, %d indexed; want %d each", news, len(seen), len(members), n)
					}
				} else if news != 1 || len(seen) != 1 || len(members) != 1 {
					t.Errorf("idempotent: %d new, %d ids, %d indexed; want 1 each", news, len(seen), len(members))
				}
			})
		})
	}
}

// TestTokens checks that a token is kept only as the first 128 bits of its
// SHA-256, in its
// session's shard, under a key with the token lifetime, and lives by the
// injected clock.
func TestTokens(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.create("ref")
		if !strings.HasPrefix(c.Token, "vst_") || len(c.Token) != len("vst_")+43 {
			t.Fatalf("token %q does not look opaque and random", c.Token)
		}
		if strings.Contains(e.contents(), c.Token) {
			t.Fatalf("the plaintext token is in Redis")
		}
		key := e.ks.Token(e.shardOf(c.ID), storedTokenHash(c.Token))
		if ttl := e.rdb.PTTL(e.ctx, key).Val(); ttl <= testTokenTTL-10*time.Second || ttl > testTokenTTL {
			t.Errorf("PTTL(%s) = %v, want about %v", key, ttl, testTokenTTL)
		}
		if got := e.record(c.ID).TokenHash; got != storedTokenHash(c.Token) {
			t.Errorf("record holds token hash %q, want the hash", got)
		}
		if s, err := e.svc.SessionForToken(e.ctx, c.Token); err != nil || s.ID != c.ID {
			t.Fatalf("SessionForToken: %v, %v", s, err)
		}
		other := c.Token[:len(c.Token)-1] + map[bool]string{true: "B", false: "A"}[strings.HasSuffix(c.Token, "A")]
		for _, bad := range []string{c.Token + "x", other, "vst_", "", strings.TrimPrefix(c.Token, "vst_")} {
			if _, err := e.svc.SessionForToken(e.ctx, bad); !errors.Is(err, ErrNotFound) {
				t.Errorf("SessionForToken(%q): %v, want ErrNotFound", bad, err)
			}
		}

		// The token's lifetime runs on the injected clock, like everything else.
		e.clock.Advance(testTokenTTL - time.Millisecond)
		if _, err := e.svc.SessionForToken(e.ctx, c.Token); err != nil {
			t.Errorf("token before its lifetime ends: %v", err)
		}
		e.clock.Advance(time.Millisecond)
		if _, err := e.svc.SessionForToken(e.ctx, c.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("token past its lifetime: %v, want ErrNotFound", err)
		}

		// Leaving the active statuses revokes the token.
		d := e.create("ref2")
		if _, err := e.svc.Cancel(e.ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.SessionForToken(e.ctx, d.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("token of a canceled session: %v", err)
		}
		if got := e.keys("*:tok:*"); !slices.Equal(got, []string{key}) {
			t.Errorf("token keys %v, want only the first session's", got)
		}
	})
}

// TestIntrospect checks Introspect for an active, a replaced, an expired,
// an unknown, a malformed token, and tokens of sessions that are over.
func TestIntrospect(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.create("ref")
		s, exp, err := e.svc.Introspect(e.ctx, c.Token)
		if err != nil || s.ID != c.ID || s.Status != StatusCreated || !exp.Equal(c.TokenExpiresAt.Time) {
			t.Fatalf("active token: %+v, %v, %v", s, exp, err)
		}
		e.clock.Advance(time.Minute)
		again := e.create("ref")
		if _, _, err := e.svc.Introspect(e.ctx, c.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("replaced token: %v, want ErrNotFound", err)
		}
		s, exp, err = e.svc.Introspect(e.ctx, again.Token)
		if err != nil || s.ID != c.ID || !exp.Equal(e.clock.Now().Add(testTokenTTL)) {
			t.Errorf("the replacing token: %+v, %v, %v", s, exp, err)
		}
		unknown, _ := newToken(e.shardOf(c.ID))
		for name, tok := range map[string]string{"unknown": unknown, "malformed": "vst_!!", "foreign": "sk_live_abc"} {
			if _, _, err := e.svc.Introspect(e.ctx, tok); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s token: %v, want ErrNotFound", name, err)
			}
		}
		e.clock.Advance(testTokenTTL)
		if _, _, err := e.svc.Introspect(e.ctx, again.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired token: %v, want ErrNotFound", err)
		}

		// A live token of a session that is no longer active, or is gone.
		for _, end := range []struct {
			name string
			do   func(id string) error
		}{
			{"canceled", func(id string) error { _, err := e.svc.Cancel(e.ctx, id); return err }},
			{"deleted", func(id string) error { return e.svc.Delete(e.ctx, id) }},
			{"overdue", func(id string) error { e.clock.Advance(testSessionTTL); return nil }},
		} {
			d := e.create("end-" + end.name)
			if _, _, err := e.svc.Introspect(e.ctx, d.Token); err != nil {
				t.Fatalf("%s: before: %v", end.name, err)
			}
			if err := end.do(d.ID); err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.svc.Introspect(e.ctx, d.Token); !errors.Is(err, ErrNotFound) {
				t.Errorf("token of a %s session: %v, want ErrNotFound", end.name, err)
			}
		}
	})
}

// TestLazyExpiry checks that a read past expires_at shows the session
// expired (or abandoned) and emits exactly one event, and never earlier.
func TestLazyExpiry(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		created := e.create("a")
		started := e.create("b")
		if _, err := e.svc.Progress(e.ctx, started.ID, StatusStarted); err != nil {
			t.Fatal(err)
		}

		e.clock.Advance(testSessionTTL - time.Millisecond)
		for _, id := range []string{created.ID, started.ID} {
			if s := e.get(id); !s.Status.Pending() {
				t.Errorf("%s before expires_at: %s", id, s.Status)
			}
			if ok, err := e.svc.ExpireDue(e.ctx, id); ok || err != nil {
				t.Errorf("ExpireDue before expires_at = %v, %v", ok, err)
			}
		}
		if due := e.dueNow(WorkExpire); len(due) != 0 {
			t.Errorf("due before expires_at: %v", due)
		}
		e.clock.Advance(time.Millisecond)

		// Many readers at once: one expiry, one event.
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if s, err := e.svc.Get(e.ctx, created.ID); err != nil || s.Status != StatusExpired {
					t.Errorf("Get past expires_at: %v, %v", s, err)
				}
			})
		}
		wg.Wait()
		if got := e.eventTypes(created.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
			t.Errorf("events %v", got)
		}
		if s := e.get(started.ID); s.Status != StatusAbandoned || s.ExpiresAt != nil {
			t.Errorf("started past expires_at: %s expires_at=%v, want abandoned", s.Status, s.ExpiresAt)
		}
		e.get(started.ID)
		if got := e.eventTypes(started.ID); !slices.Equal(got, []string{"session.created", "session.started", "session.abandoned"}) {
			t.Errorf("events %v", got)
		}
		if _, err := e.svc.SessionForToken(e.ctx, created.Token); !errors.Is(err, ErrNotFound) {
			t.Errorf("token of an expired session: %v", err)
		}
		e.checkSession(created.ID)
		e.checkSession(started.ID)

		// An operation on an overdue session acts on the expired one.
		late := e.create("c")
		e.clock.Advance(testSessionTTL)
		if _, err := e.svc.Progress(e.ctx, late.ID, StatusStarted); !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("progress of an overdue session: %v, want ErrInvalidTransition", err)
		}
		if got := e.eventTypes(late.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
			t.Errorf("events %v", got)
		}
		e.checkSession(late.ID)
	})
}

// TestExpiryNeverEarly checks that the time limit is never shorter than
// SessionTTL, with a clock that does not sit on whole milliseconds.
func TestExpiryNeverEarly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.clock.Advance(500 * time.Microsecond)
	c := e.create("ref")
	deadline := e.clock.Now().Add(testSessionTTL)
	if c.ExpiresAt.Before(deadline) {
		t.Errorf("expires_at %v is before created + SessionTTL %v", c.ExpiresAt.Time, deadline)
	}
	e.clock.Advance(testSessionTTL - time.Nanosecond)
	if s := e.get(c.ID); s.Status != StatusCreated {
		t.Errorf("status %s before SessionTTL passed", s.Status)
	}
	e.clock.Advance(time.Millisecond)
	if s := e.get(c.ID); s.Status != StatusExpired {
		t.Errorf("status %s past expires_at", s.Status)
	}
}

// TestResume checks that resume returns a session to the status it
// expired from, with a new token and time limit, keeping its progress.
func TestResume(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "ref", FlowID: "flow", Person: json.RawMessage(`{"name":"P"}`), Metadata: json.RawMessage(`{"m":1}`)})
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"vip"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Progress(e.ctx, c.ID, StatusStarted); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(testSessionTTL)
		if s := e.get(c.ID); s.Status != StatusAbandoned {
			t.Fatalf("status %s, want abandoned", s.Status)
		}
		e.clock.Advance(time.Minute)
		r, err := e.svc.Resume(e.ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		if r.Status != StatusStarted {
			t.Errorf("resumed to %s, want started", r.Status)
		}
		if r.ExpiresAt == nil || !r.ExpiresAt.Equal(now.Add(testSessionTTL)) {
			t.Errorf("expires_at %v, want %v", r.ExpiresAt, now.Add(testSessionTTL))
		}
		if r.Token == "" || r.Token == c.Token || !r.TokenExpiresAt.Equal(now.Add(testTokenTTL)) {
			t.Errorf("token %q expiring %v", r.Token, r.TokenExpiresAt)
		}
		if s, err := e.svc.SessionForToken(e.ctx, r.Token); err != nil || s.ID != c.ID {
			t.Errorf("new token: %v, %v", s, err)
		}
		s := e.get(c.ID)
		if string(s.Person) != `{"name":"P"}` || string(s.Metadata) != `{"m":1}` || !slices.Equal(s.Tags, []string{"vip"}) || s.FlowID != "flow" {
			t.Errorf("progress lost: %+v", s)
		}
		if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.started", "session.abandoned", "session.resumed"}) {
			t.Errorf("events %v", got)
		}
		e.checkSession(c.ID)

		// A resumed session may expire again, and resume again.
		if _, err := e.svc.Expire(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Resume(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		e.checkSession(c.ID)
	})
}

// TestResumeWithAnotherActive checks that a ref_id keeps at most one active
// session across a resume, and that a session already past its time limit
// does not count as active (it expires in the resume's commit).
func TestResumeWithAnotherActive(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		a := e.create("ref")
		if _, err := e.svc.Expire(e.ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		b := e.create("ref")
		if !b.New {
			t.Fatal("create after expiry returned the expired session")
		}
		before := e.sessionState(a.ID)
		if _, err := e.svc.Resume(e.ctx, a.ID); !errors.Is(err, ErrRefBusy) {
			t.Fatalf("resume beside an active session: %v, want ErrRefBusy", err)
		}
		if e.sessionState(a.ID) != before {
			t.Errorf("a refused resume changed the session")
		}

		// b runs out of time; it is expired, so a may resume.
		e.clock.Advance(testSessionTTL)
		r, err := e.svc.Resume(e.ctx, a.ID)
		if err != nil {
			t.Fatalf("resume once the other session is past its time: %v", err)
		}
		if r.Status != StatusCreated {
			t.Errorf("resumed to %s", r.Status)
		}
		if got := e.record(b.ID).Status; got != StatusExpired {
			t.Errorf("other session %s in Redis, want expired", got)
		}
		if got := e.eventTypes(b.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
			t.Errorf("other session events %v", got)
		}
		if owner := e.rdb.Get(e.ctx, e.ks.Ref(ShardOfRef("ref"), "ref")).Val(); owner != a.ID {
			t.Errorf("ref key -> %s, want the resumed session", owner)
		}
		e.checkSession(a.ID)
		e.checkSession(b.ID)
	})
}

// TestUpdate checks metadata and tags updates and their validation.
func TestUpdate(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "ref", Metadata: json.RawMessage(`{"a":1}`)})
		e.clock.Advance(time.Second)
		s, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"x", "y"}})
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Metadata) != `{"a":1}` || !slices.Equal(s.Tags, []string{"x", "y"}) || !s.UpdatedAt.Equal(e.clock.Now()) {
			t.Errorf("after tags update: %+v", s)
		}
		if got := e.get(c.ID); string(got.Metadata) != `{"a":1}` || !slices.Equal(got.Tags, []string{"x", "y"}) {
			t.Errorf("read back: %+v", got)
		}
		s, err = e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`null`)})
		if err != nil {
			t.Fatal(err)
		}
		if s.Metadata != nil || !slices.Equal(s.Tags, []string{"x", "y"}) {
			t.Errorf("after clearing metadata: %+v", s)
		}
		if got := e.keys(e.ks.Personal(e.shardOf(c.ID), c.ID)); len(got) != 0 {
			t.Errorf("personal data key left with nothing in it")
		}
		var ve *ValidationError
		for _, bad := range []UpdateRequest{
			{},
			{Metadata: json.RawMessage(`[1]`)},
			{Tags: &[]string{""}},
			{Tags: &[]string{"a\x00"}},
			{Tags: new(make([]string, 51))},
		} {
			before := e.sessionState(c.ID)
			if _, err := e.svc.Update(e.ctx, c.ID, bad); !errors.As(err, &ve) {
				t.Errorf("Update(%+v): %v, want a ValidationError", bad, err)
			}
			if e.sessionState(c.ID) != before {
				t.Errorf("a refused update changed the session")
			}
		}
		if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created"}) {
			t.Errorf("updates emitted events: %v", got)
		}
		if _, err := e.svc.Update(e.ctx, "00000000-0000-4000-8000-000000000000", UpdateRequest{Tags: &[]string{"x"}}); !errors.Is(err, ErrNotFound) {
			t.Errorf("update of an unknown session: %v", err)
		}
		e.checkSession(c.ID)
	})
}

// TestTimer checks that the fast-path hook hears of each new time limit,
// and of nothing that has none.
func TestTimer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.create("ref")
	want := []Work{{Kind: WorkExpire, SessionID: c.ID, At: testStart.Add(testSessionTTL)}}
	if got := e.timer.of(c.ID); !slices.EqualFunc(got, want, sameWork) {
		t.Errorf("after create: %+v, want %+v", got, want)
	}
	e.clock.Advance(time.Minute)
	e.create("ref") // extends the time limit
	want = append(want, Work{Kind: WorkExpire, SessionID: c.ID, At: e.clock.Now().Add(testSessionTTL)})
	if got := e.timer.of(c.ID); !slices.EqualFunc(got, want, sameWork) {
		t.Errorf("after an idempotent create: %+v, want %+v", got, want)
	}
	if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.timer.of(c.ID); !slices.EqualFunc(got, want, sameWork) {
		t.Errorf("after cancel and delete: %+v, want %+v (no time limit)", got, want)
	}

	d := e.create("other")
	if _, err := e.svc.Expire(e.ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.svc.Resume(e.ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	wantD := []Work{
		{Kind: WorkExpire, SessionID: d.ID, At: e.clock.Now().Add(-time.Minute + testSessionTTL)},
		{Kind: WorkExpire, SessionID: d.ID, At: e.clock.Now().Add(testSessionTTL)},
	}
	if got := e.timer.of(d.ID); !slices.EqualFunc(got, wantD, sameWork) {
		t.Errorf("after resume: %+v, want %+v", got, wantD)
	}
}

func sameWork(a, b Work) bool {
	return a.Kind == b.Kind && a.SessionID == b.SessionID && a.At.Equal(b.At)
}

// TestOnce checks lifecycle.Once: the key is spent in the operation's
// first read, so a second operation with the same key returns ErrReplayed
// and changes nothing, whatever it asks; creates included, when the
// ref_id has an active session too.
func TestOnce(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"n":1}`)})
		sh := e.shardOf(c.ID)
		n := 0
		key := func(sh keyspace.Shard) string {
			n++
			return e.ks.Nonce(sh, "client", "nonce-"+string(rune('a'+n)))
		}
		// replayed runs do twice with one key: the first must succeed, the
		// second must be refused and change nothing.
		replayed := func(name string, sh keyspace.Shard, do func(o Option) error) {
			t.Helper()
			k := key(sh)
			if err := do(Once(k, time.Minute)); err != nil {
				t.Fatalf("%s: first: %v", name, err)
			}
			if ttl := e.rdb.PTTL(e.ctx, k).Val(); ttl <= 50*time.Second || ttl > time.Minute {
				t.Errorf("%s: nonce PTTL %v, want about a minute", name, ttl)
			}
			before := e.snapshot()
			if err := do(Once(k, time.Minute)); !errors.Is(err, ErrReplayed) {
				t.Errorf("%s: replay: %v, want ErrReplayed", name, err)
			}
			assertSameSnapshot(t, before, e.snapshot())
		}
		replayed("get", sh, func(o Option) error { _, err := e.svc.Get(e.ctx, c.ID, o); return err })
		replayed("introspect", sh, func(o Option) error { _, _, err := e.svc.Introspect(e.ctx, c.Token, o); return err })
		replayed("introspect a foreign token", sh, func(o Option) error {
			if _, _, err := e.svc.Introspect(e.ctx, "sk_foreign", o); !errors.Is(err, ErrNotFound) {
				return err
			}
			return nil
		})
		replayed("update", sh, func(o Option) error {
			_, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"t"}}, o)
			return err
		})
		replayed("progress", sh, func(o Option) error { _, err := e.svc.Progress(e.ctx, c.ID, StatusStarted, o); return err })
		var again *Created
		replayed("create beside the active session", ShardOfRef("ref"), func(o Option) error {
			got, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref"}, o)
			if err == nil {
				again = got
			}
			return err
		})
		if again.New || again.ID != c.ID {
			t.Errorf("create beside the active session made a new one")
		}
		var fresh *Created
		replayed("create", ShardOfRef("fresh"), func(o Option) error {
			got, err := e.svc.Create(e.ctx, CreateRequest{RefID: "fresh"}, o)
			if err == nil {
				fresh = got
			}
			return err
		})
		if !fresh.New {
			t.Errorf("create of a fresh ref_id returned an existing session")
		}
		replayed("redact", sh, func(o Option) error { _, err := e.svc.Redact(e.ctx, c.ID, o); return err })
		replayed("delete", sh, func(o Option) error { return e.svc.Delete(e.ctx, c.ID, o) })

		// The key is spent by the read, even when the operation is then
		// refused.
		k := key(e.shardOf(fresh.ID))
		if _, err := e.svc.Progress(e.ctx, fresh.ID, StatusReview, Once(k, time.Minute)); !errors.Is(err, ErrInvalidTransition) {
			t.Fatalf("refused progress: %v", err)
		}
		if _, err := e.svc.Progress(e.ctx, fresh.ID, StatusStarted, Once(k, time.Minute)); !errors.Is(err, ErrReplayed) {
			t.Errorf("progress with a key a refused one spent: %v, want ErrReplayed", err)
		}
		if got := e.get(fresh.ID).Status; got != StatusCreated {
			t.Errorf("status %s after a replay", got)
		}
		e.checkSession(fresh.ID)
		e.checkSession(c.ID)
	})
}

// TestRedact checks that a redaction removes person, metadata, tags and the
// decision's reason from every key in Redis (record, personal data key,
// every event's details) at once and for good, and that the events
// remain.
func TestRedact(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const name, note, meta2, tag, reason = "Zanzibar Quixote", "Xylophone-Secret", "Quokka-Private", "Tag-Wombat", "Reason-Narwhal"
		secrets := []string{name, note, meta2, tag, reason, "1970-01-01"}
		c := e.createWith(CreateRequest{
			RefID:    "ref",
			Person:   json.RawMessage(`{"name":"` + name + `","dob":"1970-01-01"}`),
			Metadata: json.RawMessage(`{"note":"` + note + `"}`),
		})
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`{"note":"` + meta2 + `"}`), Tags: &[]string{tag}}); err != nil {
			t.Fatal(err)
		}
		for _, to := range []Status{StatusStarted, StatusSubmitted} {
			if _, err := e.svc.Progress(e.ctx, c.ID, to); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.svc.Decide(e.ctx, c.ID, DecisionRequest{Status: StatusDeclined, Reason: reason, ReasonCode: new(102)}); err != nil {
			t.Fatal(err)
		}
		e.createWith(CreateRequest{RefID: "other", Person: json.RawMessage(`{"name":"Neighbour"}`)}) // whose data stays
		all := e.contents()
		for _, secret := range []string{name, meta2, tag, reason} {
			if !strings.Contains(all, secret) {
				t.Fatalf("%q not stored where the test looks", secret)
			}
		}
		for _, secret := range secrets {
			if strings.Contains(e.outboxText(), secret) {
				t.Errorf("%q in the outbox", secret)
			}
		}
		types := e.eventTypes(c.ID)

		e.clock.Advance(time.Second)
		s, err := e.svc.Redact(e.ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Person != nil || s.Metadata != nil || len(s.Tags) != 0 || s.RedactedAt == nil || !s.RedactedAt.Equal(e.clock.Now()) {
			t.Errorf("redacted session %+v", s)
		}
		if s.Status != StatusDeclined || s.ID != c.ID || s.RefID != "ref" || s.Decision == nil || s.Decision.Reason != "" ||
			s.Decision.Status != StatusDeclined || s.Decision.ReasonCode == nil || *s.Decision.ReasonCode != 102 {
			t.Errorf("redaction changed more than the personal data: %+v, decision %+v", s, s.Decision)
		}
		all = e.contents()
		for _, secret := range secrets {
			if strings.Contains(all, secret) {
				t.Errorf("%q still in Redis after redaction", secret)
			}
		}
		if !strings.Contains(all, "Neighbour") {
			t.Errorf("the neighbour's personal data went too")
		}
		if got := e.keys(e.ks.Personal(e.shardOf(c.ID), c.ID)); len(got) != 0 {
			t.Errorf("personal data key %v remains", got)
		}
		if got := e.get(c.ID); got.Person != nil || got.Metadata != nil || len(got.Tags) != 0 || got.Decision.Reason != "" {
			t.Errorf("Get after redact: %+v", got)
		}
		// The events remain, each with its details, redacted.
		if got := e.eventTypes(c.ID); !slices.Equal(got, append(types, EventRedacted)) {
			t.Errorf("events after redaction %v, want %v", got, append(types, EventRedacted))
		}
		for i, d := range e.eventData(c.ID) {
			if d.RefID != "ref" || d.Tags == nil || len(*d.Tags) != 0 || (d.Decision != nil && d.Decision.Reason != "") || d.RedactedAt == nil {
				t.Errorf("event %d (%s) data after redaction: %+v", i, types[min(i, len(types)-1)], d)
			}
		}

		// A second redaction changes nothing; personal data cannot come back.
		before := e.sessionState(c.ID)
		if _, err := e.svc.Redact(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if e.sessionState(c.ID) != before {
			t.Errorf("second redaction changed the session")
		}
		var ve *ValidationError
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`{"x":1}`)}); !errors.As(err, &ve) {
			t.Errorf("metadata onto a redacted session: %v, want a ValidationError", err)
		}
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"ok"}}); !errors.As(err, &ve) {
			t.Errorf("tags onto a redacted session: %v, want a ValidationError", err)
		}
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{}}); err != nil {
			t.Errorf("no tags onto a redacted session: %v", err)
		}
		e.checkSession(c.ID)
	})
}

// TestLink checks CreateRequest.Link: a stored response linked to a
// session is set to ErasedResponse, keeping its TTL, by the session's
// redaction, delete and purge; Erased tells whether the data is gone.
func TestLink(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const secret = "Linked-Secret-Person"
		stored := `{"person":{"name":"` + secret + `"}}`
		link := func(name string) string {
			k := e.ks.Idempotency("client", name)
			if err := e.rdb.Set(e.ctx, k, stored, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			return k
		}
		checkErased := func(what string, keys ...string) {
			t.Helper()
			for _, k := range keys {
				if v := e.rdb.Get(e.ctx, k).Val(); v != ErasedResponse {
					t.Errorf("%s: stored response %s holds %q, want %q", what, k, v, ErasedResponse)
				}
				if ttl := e.rdb.PTTL(e.ctx, k).Val(); ttl <= 50*time.Minute || ttl > time.Hour {
					t.Errorf("%s: stored response %s PTTL %v, want its hour kept", what, k, ttl)
				}
			}
		}
		erased := func(id string) bool {
			t.Helper()
			ok, err := e.svc.Erased(e.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}

		// Redaction erases the links of the create and of an idempotent
		// create; a link never written stays absent.
		l1, l2 := e.ks.Idempotency("client", "k1"), e.ks.Idempotency("client", "k2")
		c := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"` + secret + `"}`), Link: l1})
		link("k1")
		if again := e.createWith(CreateRequest{RefID: "ref", Link: l2}); again.ID != c.ID {
			t.Fatal("idempotent create made a new session")
		}
		link("k2")
		never := e.ks.Idempotency("client", "never")
		if _, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", Link: never}); err != nil {
			t.Fatal(err)
		}
		if erased(c.ID) {
			t.Errorf("Erased before the redaction")
		}
		if _, err := e.svc.Redact(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		checkErased("redact", l1, l2)
		if n := e.rdb.Exists(e.ctx, never).Val(); n != 0 {
			t.Errorf("the erasure made a stored response that never was")
		}
		if !erased(c.ID) {
			t.Errorf("Erased after the redaction = false")
		}
		if strings.Contains(e.contents(), secret) {
			t.Errorf("%q still in Redis after the redaction", secret)
		}

		// Delete erases, and so does the purge, for a copy written in
		// between.
		l3 := e.ks.Idempotency("client", "k3")
		d := e.createWith(CreateRequest{RefID: "del", Person: json.RawMessage(`{"name":"` + secret + `"}`), Link: l3})
		link("k3")
		if err := e.svc.Delete(e.ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		checkErased("delete", l3)
		if !erased(d.ID) {
			t.Errorf("Erased after delete = false")
		}
		link("k3")
		e.clock.Advance(testPurgeAfter)
		if ok, err := e.svc.Run(e.ctx, WorkPurge, d.ID); !ok || err != nil {
			t.Fatalf("purge = %v, %v", ok, err)
		}
		checkErased("purge", l3)
		if !erased(d.ID) {
			t.Errorf("Erased after the purge = false")
		}
		if !erased("00000000-0000-4000-8000-000000000000") || !erased("not-an-id") {
			t.Errorf("Erased of a session that never was = false")
		}
		if strings.Contains(e.contents(), secret) {
			t.Errorf("%q still in Redis after the purge", secret)
		}
	})
}

// TestEventDetailsOutliveQuietSessions checks that an event committed after
// the session's event details hash has expired (a session quiet for longer
// than EventsRetention, here simulated by deleting the hash) still has its
// full data, and that the hash gets a TTL again, a deleted session's ending
// with its purge.
func TestEventDetailsOutliveQuietSessions(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "quiet", FlowID: "flow"})
		for _, to := range []Status{StatusSubmitted, StatusReview} {
			if _, err := e.svc.Progress(e.ctx, c.ID, to); err != nil {
				t.Fatal(err)
			}
		}
		evKey := e.ks.EventDetails(e.shardOf(c.ID), c.ID)
		e.rdb.Del(e.ctx, evKey) // its TTL ran out
		if _, err := e.svc.Decide(e.ctx, c.ID, DecisionRequest{Status: StatusApproved, Reason: "fine"}); err != nil {
			t.Fatal(err)
		}
		evs := e.events(c.ID)
		data, full, err := e.svc.EventDetails(e.ctx, evs[len(evs)-1:])
		if err != nil {
			t.Fatal(err)
		}
		if d := data[0]; !full[0] || d.RefID != "quiet" || d.FlowID != "flow" || d.CreatedAt == nil || d.Decision == nil || d.Decision.Reason != "fine" {
			t.Errorf("approval after the details expired: full=%v %+v", full[0], d)
		}
		if ttl := e.rdb.PTTL(e.ctx, evKey).Val(); ttl <= 0 {
			t.Errorf("event details PTTL %v, want a TTL", ttl)
		}

		e.rdb.Del(e.ctx, evKey)
		if err := e.svc.Delete(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if ttl := e.rdb.PTTL(e.ctx, evKey).Val(); ttl <= testPurgeAfter-time.Minute || ttl > testPurgeAfter {
			t.Errorf("deleted session's event details PTTL %v, want its purge (%v)", ttl, testPurgeAfter)
		}
	})
}

// storedTokenHash is what Redis should keep of a token, computed here
// apart from the code under test: base64url of the first 16 bytes of its
// SHA-256.
func storedTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}
