package lifecycle

import (
	"errors"
	"sync"
	"time"
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

// errNeedRead is apply's answer when a change tried on a known record
// must be decided on a read instead; nothing was written.
var errNeedRead = errors.New("change needs a read")

// knownRecord returns the record this process committed for session id in
// the last knownFor, unless its personal data's TTL is about to end; nil
// otherwise. The record must not be changed: changes clone it.
func (s *Service) knownRecord(id string) *record {
	now := s.now()
	old := s.known.get(id, now)
	if old == nil || !now.Add(knownMargin).Before(s.redactAt(old)) {
		return nil
	}
	return old
}
