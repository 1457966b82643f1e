package lifecycle

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// A change of a session is one read and one commit. The read (read)
// fetches the session's record, with its version, in one round trip; the
// operation decides in Go; the commit (commit.lua) checks that the
// versions it read are still current and applies every write of the
// change in one atomic script, in the session's slot. When a version
// moved meanwhile, the operation reads again.

// record is a session as stored: the public object without its personal
// fields, plus what the store needs to change it safely.
type record struct {
	Session
	// Version counts the record's writes; it is the hash's field v, not
	// part of the JSON.
	Version int64 `json:"-"`
	// Seq is the sequence number of the session's last event.
	Seq int64 `json:"seq"`
	// ExpiredFrom is the pending status an expired session had, so that a
	// resume returns to it.
	ExpiredFrom Status `json:"expired_from,omitempty"`
	// RetainFrom is when retention starts counting: the last change other
	// than a redaction. It is stored only when it is not UpdatedAt.
	RetainFrom Time `json:"retain_from,omitzero"`
	// DeletedAt marks a deleted session: gone from every read, purged at
	// DeletedAt+PurgeAfter.
	DeletedAt *Time `json:"deleted_at,omitempty"`
	// TokenExpiresAt is when the current token stops working, on the
	// injected clock; nil when there is none.
	TokenExpiresAt *Time `json:"token_expires_at,omitempty"`
	// TokenHash is hashToken of the current token, "" when there is none;
	// the token key maps it back to the session.
	TokenHash string `json:"token_hash,omitempty"`
	// Links are keys outside the session's slot that hold a copy of its
	// personal data (a stored Idempotency-Key response); a redaction or a
	// purge erases them.
	Links []string `json:"links,omitempty"`
}

// personal is what the personal data key holds.
type personal struct {
	Person   json.RawMessage `json:"person,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// A session's record key is a string: the version, a space, then the
// record's JSON. A string costs less than a hash (whose JSON value would
// exceed Redis's compact encoding), and commit.lua reads the version
// with GETRANGE.

// encodeStored is the value of a record key.
func encodeStored(version int64, body []byte) string {
	return strconv.FormatInt(version, 10) + " " + string(body)
}

// splitStored splits a record key's value into its version and JSON.
func splitStored(val string) (version int64, raw string, err error) {
	vs, raw, ok := strings.Cut(val, " ")
	if ok {
		version, err = strconv.ParseInt(vs, 10, 64)
	}
	// Only the form encodeStored writes: commit.lua compares the digits
	// as a string, so "012" or "+12" would never match version 12.
	if !ok || err != nil || version <= 0 || strconv.FormatInt(version, 10) != vs {
		return 0, "", fmt.Errorf("session record: malformed version %.20q", val)
	}
	return version, raw, nil
}

// encodeRecord is the JSON a record key keeps of r: without personal data,
// and without what decodeRecord puts back (the id, which the key names;
// retain_from when it is updated_at).
func encodeRecord(r *record) ([]byte, error) {
	stored := r.clone()
	stored.Person, stored.Metadata = nil, nil
	stored.ID = ""
	if stored.RetainFrom.Equal(stored.UpdatedAt.Time) {
		stored.RetainFrom = Time{}
	}
	b, err := json.Marshal(stored)
	if err != nil {
		return nil, fmt.Errorf("encode session %s: %w", r.ID, err)
	}
	return b, nil
}

// decodeRecord decodes the stored record of session id.
func decodeRecord(id, raw string, version int64) (*record, error) {
	r := new(record)
	if err := json.Unmarshal([]byte(raw), r); err != nil {
		return nil, fmt.Errorf("decode session record: %w", err)
	}
	r.ID = id
	if r.RetainFrom.IsZero() {
		r.RetainFrom = r.UpdatedAt
	}
	if r.Tags == nil {
		r.Tags = []string{}
	}
	r.Version = version
	return r, nil
}

// clone returns a deep enough copy of r for a change to edit.
func (r *record) clone() *record {
	c := *r
	c.Tags = append([]string{}, r.Tags...)
	c.Links = append([]string(nil), r.Links...)
	if r.Decision != nil {
		d := *r.Decision
		c.Decision = &d
	}
	return &c
}

// shard is the record's shard.
func (r *record) shard() keyspace.Shard {
	sh, _ := keyspace.SessionShard(r.ID)
	return sh
}

// maxTxAttempts bounds the optimistic retries of one operation. Reaching
// it means dozens of writers raced on one session at the same instant.
const maxTxAttempts = 100

// backoff waits a little before an operation reads again after a
// conflict.
func backoff(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(mrand.IntN(2000)+100) * time.Microsecond):
		return nil
	}
}

// read loads session id of shard sh in one round trip: its record with
// version and its personal data; with o.once set it first spends that key.
// A deleted session is ErrNotFound unless withDeleted.
func (s *Service) read(ctx context.Context, sh keyspace.Shard, id string, o options, withDeleted bool) (*record, error) {
	r, _, err := s.readWith(ctx, sh, id, o, withDeleted, false)
	return r, err
}

// readWith is read that also returns the session's event details when
// withDetails is set (a change that may redact them), in the same round
// trip.
func (s *Service) readWith(ctx context.Context, sh keyspace.Shard, id string, o options, withDeleted, withDetails bool) (*record, map[string]string, error) {
	p := s.rdb.Pipeline()
	var once *redis.BoolCmd
	if o.once != "" {
		once = p.SetNX(ctx, o.once, 1, o.onceTTL)
	}
	rec := p.Get(ctx, s.keys.Session(sh, id))
	pii := p.Get(ctx, s.keys.Personal(sh, id))
	var ev *redis.MapStringStringCmd
	if withDetails {
		ev = p.HGetAll(ctx, s.keys.EventDetails(sh, id))
	}
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read session: %w", err)
	}
	if once != nil && !once.Val() {
		return nil, nil, ErrReplayed
	}
	r, err := s.decode(id, rec.Val(), pii, withDeleted)
	if err != nil || ev == nil {
		return r, nil, err
	}
	return r, ev.Val(), nil
}

// decode turns the value of session id's record key ("" when there is
// none) and a personal data reply into a record.
func (s *Service) decode(id, val string, pii *redis.StringCmd, withDeleted bool) (*record, error) {
	if val == "" {
		return nil, ErrNotFound
	}
	version, raw, err := splitStored(val)
	if err != nil {
		return nil, err
	}
	r, err := decodeRecord(id, raw, version)
	if err != nil {
		return nil, err
	}
	if r.DeletedAt != nil && !withDeleted {
		return nil, ErrNotFound
	}
	if p, err := pii.Result(); err == nil {
		var pd personal
		if err := json.Unmarshal([]byte(p), &pd); err != nil {
			return nil, fmt.Errorf("decode session %s personal data: %w", r.ID, err)
		}
		r.Person, r.Metadata = pd.Person, pd.Metadata
	}
	return r, nil
}

//go:embed scripts/commit.lua
var commitLua string

var commitScript = redis.NewScript(commitLua)

// tx is one commit being built: the keys it touches (one slot), the
// guards that must still hold, and its writes.
type tx struct {
	keys   []string
	index  map[string]int
	guards []any
	ops    []any
	nGuard int
}

func newTx() *tx { return &tx{index: make(map[string]int, 16)} }

// key returns k's index in KEYS (from 1).
func (t *tx) key(k string) int {
	if i, ok := t.index[k]; ok {
		return i
	}
	t.keys = append(t.keys, k)
	t.index[k] = len(t.keys)
	return len(t.keys)
}

// expectVersion guards a record's version; 0 means it must not exist.
func (t *tx) expectVersion(k string, v int64) {
	val := ""
	if v > 0 {
		val = strconv.FormatInt(v, 10)
	}
	t.guards = append(t.guards, "v", t.key(k), val)
	t.nGuard++
}

// expectValue guards a string key's value; "" means it must not exist.
func (t *tx) expectValue(k, v string) {
	t.guards = append(t.guards, "g", t.key(k), v)
	t.nGuard++
}

// spend guards that key does not exist and sets it for ttl: a nonce.
func (t *tx) spend(k string, ttl time.Duration) {
	t.guards = append(t.guards, "n", t.key(k), "")
	t.nGuard++
	t.op("SET", k, 1, "PX", max(ttl.Milliseconds(), 1))
}

// op appends the write "cmd key args...".
func (t *tx) op(cmd, k string, args ...any) {
	t.ops = append(t.ops, len(args), cmd, t.key(k))
	t.ops = append(t.ops, args...)
}

// setUntil writes key = value with a TTL that ends at the instant at of
// the injected clock. The TTL is sent relative (at - now), so it holds
// whatever Redis's own clock says; a key whose time has passed is deleted.
func (t *tx) setUntil(key string, value any, now, at time.Time) {
	if d := at.Sub(now); d >= time.Millisecond {
		t.op("SET", key, value, "PX", d.Milliseconds())
		return
	}
	t.op("DEL", key)
}

// expireAt sets key's TTL to end at the instant at (or deletes it).
func (t *tx) expireAt(key string, now, at time.Time) {
	if d := at.Sub(now); d >= time.Millisecond {
		t.op("PEXPIRE", key, d.Milliseconds())
		return
	}
	t.op("DEL", key)
}

// extendTo makes key live at least until at (never shortens its TTL).
func (t *tx) extendTo(key string, now, at time.Time) {
	ms := max(at.Sub(now).Milliseconds(), 1)
	t.op("EXTEND", key, ms)
}

// errConflict is a commit whose guards no longer held: read again.
var errConflict = errors.New("commit conflict")

// commit runs t. It returns errConflict when a version moved since the
// read, ErrReplayed when a nonce was spent, and ErrNotDurable when
// Config.MinReplicas replicas did not acknowledge it in time (it did
// commit).
func (s *Service) commit(ctx context.Context, t *tx) error {
	argv := make([]any, 0, 1+len(t.guards)+len(t.ops))
	argv = append(argv, t.nGuard)
	argv = append(argv, t.guards...)
	argv = append(argv, t.ops...)
	var (
		res  int64
		err  error
		acks int64
	)
	if s.cfg.MinReplicas > 0 {
		res, acks, err = s.commitWait(ctx, t.keys, argv)
	} else {
		res, err = commitScript.Run(ctx, s.rdb, t.keys, argv...).Int64()
	}
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	switch res {
	case 0:
		return errConflict
	case -1:
		return ErrReplayed
	}
	if s.cfg.MinReplicas > 0 && acks < int64(s.cfg.MinReplicas) {
		return fmt.Errorf("%w: %d of %d replicas within %s", ErrNotDurable, acks, s.cfg.MinReplicas, s.cfg.WaitTimeout)
	}
	return nil
}

// commitWait runs the commit and WAIT in one pipeline, on the connection
// of the node that holds the keys (WAIT counts the replicas that have
// that connection's writes).
func (s *Service) commitWait(ctx context.Context, keys []string, argv []any) (res, acks int64, err error) {
	var node redis.Cmdable = s.rdb
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		n, err := c.MasterForKey(ctx, keys[0])
		if err != nil {
			return 0, 0, err
		}
		node = n
	}
	for try := 0; ; try++ {
		p := node.Pipeline()
		run := commitScript.EvalSha(ctx, p, keys, argv...)
		wait := p.Do(ctx, "WAIT", s.cfg.MinReplicas, s.cfg.WaitTimeout.Milliseconds())
		_, err = p.Exec(ctx)
		if err != nil && try == 0 && redis.HasErrorPrefix(run.Err(), "NOSCRIPT") {
			if err := commitScript.Load(ctx, node).Err(); err != nil {
				return 0, 0, err
			}
			continue
		}
		if err := run.Err(); err != nil {
			return 0, 0, err
		}
		res, _ = run.Int64()
		acks, err = wait.Int64()
		return res, acks, err
	}
}
