package lifecycle

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestKnownRecord checks the changes made without a read (known.go): a
// change of a session the service committed last costs one round trip;
// one whose record moved meanwhile (another replica's change) is made
// again from a read, losing neither change; a refusal is answered from a
// read; and a request's nonce is spent whichever way it goes.
func TestKnownRecord(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		rt := &roundTrips{}
		svc := New(e.newClient(rt), e.svc.Config()) // one replica; e.svc is another
		c, err := svc.Create(e.ctx, CreateRequest{RefID: "known"})
		if err != nil {
			t.Fatal(err)
		}
		sh := e.shardOf(c.ID)

		n := rt.n.Load()
		if _, err := svc.Progress(e.ctx, c.ID, StatusStarted); err != nil {
			t.Fatal(err)
		}
		if got := rt.n.Load() - n; got != 1 {
			t.Errorf("a change of a known record took %d round trips, want 1 (the commit)", got)
		}

		// Another replica changes the session; this one's record is stale.
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"from-the-other"}}); err != nil {
			t.Fatal(err)
		}
		n = rt.n.Load()
		s, err := svc.Progress(e.ctx, c.ID, StatusSubmitted)
		if err != nil || s.Status != StatusSubmitted {
			t.Fatalf("progress on a stale known record: %v, %v", s, err)
		}
		if got := rt.n.Load() - n; got != 3 {
			t.Errorf("a stale known record took %d round trips, want 3 (refused commit, read, commit)", got)
		}
		if !slices.Equal(s.Tags, []string{"from-the-other"}) {
			t.Errorf("the other replica's change was lost: tags %v", s.Tags)
		}
		if s, err := svc.Decide(e.ctx, c.ID, DecisionRequest{Status: StatusApproved}); err != nil || s.Status != StatusApproved {
			t.Fatalf("decide: %v, %v", s, err)
		}
		want := []string{"session.created", "session.started", "session.submitted", "session.approved"}
		if got := e.eventTypes(c.ID); !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}

		// A refusal comes from a read, which spends the nonce.
		nonce := e.ks.Nonce(sh, "client", "n1")
		if _, err := svc.Progress(e.ctx, c.ID, StatusStarted, Once(nonce, time.Minute)); !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("approved -> started: %v, want ErrInvalidTransition", err)
		}
		if _, err := svc.Progress(e.ctx, c.ID, StatusStarted, Once(nonce, time.Minute)); !errors.Is(err, ErrReplayed) {
			t.Errorf("the same nonce again: %v, want ErrReplayed", err)
		}

		// A replay of a change that needs no read is refused by its commit,
		// which writes nothing.
		d, err := svc.Create(e.ctx, CreateRequest{RefID: "known-2"})
		if err != nil {
			t.Fatal(err)
		}
		nonce = e.ks.Nonce(e.shardOf(d.ID), "client", "n2")
		n = rt.n.Load()
		if _, err := svc.Progress(e.ctx, d.ID, StatusStarted, Once(nonce, time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := rt.n.Load() - n; got != 1 {
			t.Errorf("a change with a nonce took %d round trips, want 1", got)
		}
		before := e.sessionState(d.ID)
		if _, err := svc.Progress(e.ctx, d.ID, StatusSubmitted, Once(nonce, time.Minute)); !errors.Is(err, ErrReplayed) {
			t.Errorf("replayed change: %v, want ErrReplayed", err)
		}
		if after := e.sessionState(d.ID); after != before {
			t.Errorf("a replay changed the session:\n%s\n%s", before, after)
		}
		e.checkSession(c.ID)
		e.checkSession(d.ID)
	})
}

// TestKnownRecordsBounded checks that the known records stay under
// knownMax and that a stale one is not used.
func TestKnownRecordsBounded(t *testing.T) {
	var k knownRecords
	now := time.Now()
	for i := range knownMax + 10 {
		k.put(&record{Session: Session{ID: "s" + time.Duration(i).String()}}, now)
	}
	if n := len(k.m); n > knownMax {
		t.Errorf("%d records kept, want at most %d", n, knownMax)
	}
	k.put(&record{Session: Session{ID: "old"}}, now)
	if k.get("old", now.Add(knownFor-time.Millisecond)) == nil {
		t.Error("a record committed just under knownFor ago is not used")
	}
	if k.get("old", now.Add(knownFor)) != nil {
		t.Error("a record committed knownFor ago is still used")
	}
	deleted := At(now)
	k.put(&record{Session: Session{ID: "gone"}, DeletedAt: &deleted}, now)
	k.put(&record{Session: Session{ID: "big", Metadata: make([]byte, knownMaxPersonal+1)}}, now)
	if k.get("big", now) != nil {
		t.Error("a record with more than knownMaxPersonal bytes of personal data is kept")
	}
	if k.get("gone", now) != nil {
		t.Error("a deleted record is kept")
	}
}
