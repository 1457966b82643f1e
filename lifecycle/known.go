package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// A session's changes usually come one after another through the same
// replica (create, started, submitted, decision), and each read the
// record the previous one had just committed. The service keeps, for a
// few seconds, the records it committed last (known), and a change of one
// of them skips the read: its commit already guards the version it
// decided on, so a record that moved meanwhile (another replica, a sweep,
// a purge) makes the commit write nothing, and the change is made again
// from a read. Only a change that commits is made this way; a refusal, a
// change with nothing to do, a displacement of the ref_id's active session
// and an erasure take the usual read, which answers them from what Redis
// holds.

const (
	// knownFor is how long a committed record is used without a read.
	knownFor = 5 * time.Second
	// knownMax bounds the records kept, and knownMaxPersonal the personal
	// data of one (a larger one takes the read): at most about 20 MiB.
	knownMax         = 4096
	knownMaxPersonal = 4 << 10
	// knownMargin keeps a record from being used close to the end of its
	// personal data's TTL (at redactAt), which Redis enforces on its own.
	knownMargin = time.Second
)

// knownRecords are the records this process committed last, by session id.
type knownRecords struct {
	mu sync.Mutex
	m  map[string]knownRecord
}

type knownRecord struct {
	rec *record   // never changed once stored
	at  time.Time // when it was committed (Config.Now)
}

// get returns the record committed for id less than knownFor before now,
// or nil. The record must not be changed: changes clone it.
func (k *knownRecords) get(id string, now time.Time) *record {
	k.mu.Lock()
	defer k.mu.Unlock()
	kr, ok := k.m[id]
	if !ok {
		return nil
	}
	if now.Sub(kr.at) >= knownFor || now.Before(kr.at) {
		delete(k.m, id)
		return nil
	}
	return kr.rec
}

// put keeps r, just committed at now; a deleted record, or one with more
// than knownMaxPersonal bytes of personal data, is dropped instead.
func (k *knownRecords) put(r *record, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r.DeletedAt != nil || len(r.Person)+len(r.Metadata) > knownMaxPersonal {
		delete(k.m, r.ID)
		return
	}
	if k.m == nil {
		k.m = make(map[string]knownRecord)
	}
	if _, ok := k.m[r.ID]; !ok && len(k.m) >= knownMax {
		k.evict(now)
	}
	k.m[r.ID] = knownRecord{rec: r, at: now}
}

// evict drops the stale records, and then, if the map is still full, about
// half of the others. k.mu is held.
func (k *knownRecords) evict(now time.Time) {
	for id, kr := range k.m {
		if now.Sub(kr.at) >= knownFor {
			delete(k.m, id)
		}
	}
	for id := range k.m {
		if len(k.m) < knownMax/2 {
			break
		}
		delete(k.m, id) // map order is random enough
	}
}

// drop forgets id's record.
func (k *knownRecords) drop(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, id)
}

// mutateKnown applies ed to the record this process last committed for
// session id, without reading it, and commits with the version guard and
// the nonce of o. ok is false when the change must take the usual read:
// nothing known, the edit refused or had nothing to do, the change
// displaces the ref_id's active session or erases personal data, or the
// record moved since (the commit wrote nothing, not even the nonce).
func (s *Service) mutateKnown(ctx context.Context, sh keyspace.Shard, id string, o options, spec mutateSpec, ed edit) (m mutation, ok bool, err error) {
	now := s.now()
	old := s.known.get(id, now)
	if old == nil || !now.Add(knownMargin).Before(s.redactAt(old)) {
		return mutation{}, false, nil
	}
	r := old.clone()
	var events []string
	if overdue(r, now) {
		events = append(events, expire(r, now))
	}
	more, edErr := ed(r, now)
	if edErr != nil || (r.Status.Active() && !old.Status.Active()) {
		return mutation{}, false, nil
	}
	c := &change{
		old:       old,
		new:       r,
		oldToken:  old.TokenHash,
		events:    append(events, more...),
		refActive: r.Status.Active() && r.DeletedAt == nil,
	}
	if erases(c) {
		return mutation{}, false, nil
	}
	t := newTx()
	if o.once != "" {
		t.spend(o.once, o.onceTTL) // the first guard: a replay is refused first
	}
	if old.Status.Active() && !c.refActive {
		t.op("DELIFEQ", s.keys.Ref(sh, r.RefID), id)
	}
	out := mutation{rec: r, changed: true}
	if spec.issueToken {
		out.token = s.issueToken(c, now)
	}
	if err := s.write(t, c, now); err != nil {
		return mutation{}, true, err
	}
	err = s.commit(ctx, t)
	switch {
	case errors.Is(err, errConflict):
		s.known.drop(id)
		return mutation{}, false, nil
	case err != nil && !errors.Is(err, ErrNotDurable):
		s.known.drop(id)
		return mutation{}, true, err
	}
	s.known.put(r.clone(), now)
	s.afterCommit(ctx, c)
	return out, true, err
}
