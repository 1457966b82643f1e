package lifecycle

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// Config configures a Service. Zero values mean the documented defaults.
type Config struct {
	SessionTTL time.Duration // pending time limit; default 24h
	TokenTTL   time.Duration // token lifetime; default 30m
	PurgeAfter time.Duration // deleted data leaves Redis after; default 12h
	// Retention is how long a terminal session's personal data is kept
	// after its last change; default 720h.
	Retention time.Duration
	// RecordRetention is how long a session's non-personal record is kept
	// after its last change; default 2160h, at least Retention.
	RecordRetention time.Duration
	EventsRetention time.Duration // the outbox keeps events for; default 168h
	// PurgeLead is how long before a record's TTL ends its purge falls
	// due, so that the sweep finds the record and drops all that is named
	// after it (its stored responses, its deliveries) before Redis drops
	// the record itself; default 5m, at most half of PurgeAfter. Give it
	// at least twice the sweep's period.
	PurgeLead time.Duration

	// MinReplicas makes every change wait (Redis WAIT) until that many
	// replicas hold it; past WaitTimeout (default 1s) the change returns
	// ErrNotDurable. 0 waits for none.
	MinReplicas int
	WaitTimeout time.Duration

	// Namespace prefixes every key; default "sessiond".
	Namespace string

	// Now is the clock; default time.Now.
	Now func() time.Time
	// Timer hears of timed work after each commit; nil is allowed (the due
	// indexes still record it).
	Timer Timer
	// Observer hears of each committed transition; nil is allowed.
	Observer Observer
	Logger   *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.SessionTTL, 24*time.Hour)
	def(&c.TokenTTL, 30*time.Minute)
	def(&c.PurgeAfter, 12*time.Hour)
	def(&c.Retention, 720*time.Hour)
	def(&c.RecordRetention, 2160*time.Hour)
	c.RecordRetention = max(c.RecordRetention, c.Retention)
	def(&c.EventsRetention, 168*time.Hour)
	def(&c.PurgeLead, 5*time.Minute)
	c.PurgeLead = min(c.PurgeLead, c.PurgeAfter/2)
	def(&c.WaitTimeout, time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// WorkKind names a kind of timed work.
type WorkKind string

// The kinds of timed work, each with a due index per shard.
const (
	WorkExpire WorkKind = "expire" // a pending session's time limit
	WorkRedact WorkKind = "redact" // a terminal session's retention
	WorkPurge  WorkKind = "purge"  // a deleted session, or a record past its retention
)

// WorkKinds lists the kinds of timed work.
var WorkKinds = []WorkKind{WorkExpire, WorkRedact, WorkPurge}

// Work is timed work on one session, due at At.
type Work struct {
	Kind      WorkKind
	SessionID string
	At        time.Time
}

// Timer is told of timed work once the change that set it has committed.
// It is a fast path only: the due indexes hold the same work durably, so
// a lost call delays nothing past the scheduler's sweep. Due must not
// block.
type Timer interface {
	Due(w Work)
}

// Observer hears of every committed status change (for metrics); a new
// session is reported as a change from "" to created. It is called after
// the commit and must not block for long.
type Observer interface {
	Transitioned(from, to Status)
	// ObserveExpiryLag hears, for each session whose time limit ran out,
	// how long after its expires_at the expiry committed (never negative:
	// nothing expires early). Forced expiries are not reported.
	ObserveExpiryLag(lag time.Duration)
}

// Sentinel errors callers branch on; the HTTP layer maps them to the
// contract's codes.
var (
	ErrNotFound          = errors.New("session not found")
	ErrInvalidTransition = errors.New("transition not allowed")
	ErrSessionInProgress = errors.New("session in progress")
	ErrNotCompleted      = errors.New("session is not in a completed status")
	// ErrReplayed is returned when an operation's Once key was spent
	// already: the request is a replay, and nothing was read or changed.
	ErrReplayed = errors.New("request replayed")
	// ErrNotDurable is returned when a change committed but fewer than
	// Config.MinReplicas replicas acknowledged it within WaitTimeout: a
	// failover now could lose it.
	ErrNotDurable = errors.New("change committed, but not yet on enough replicas")
	// ErrBusy is returned when a session changed under an operation more
	// often than maxTxAttempts; the caller may retry.
	ErrBusy = errors.New("session is busy, retry")
	// ErrRefBusy refuses a resume while another session of the same
	// ref_id is active: a ref_id has at most one active session.
	ErrRefBusy = errors.New("another session for this ref_id is active")
)

// ValidationError is bad input, named by its field.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, msg string) error { return &ValidationError{Field: field, Message: msg} }

// TransitionError is an ErrInvalidTransition that says which one.
type TransitionError struct{ From, To Status }

func (e *TransitionError) Error() string {
	if e.To == "" {
		return fmt.Sprintf("operation not allowed in status %s", e.From)
	}
	return fmt.Sprintf("transition from %s to %s not allowed", e.From, e.To)
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// Service performs the session operations on Redis.
type Service struct {
	cfg  Config
	rdb  redis.UniversalClient
	keys keyspace.Space
	now  func() time.Time
	// known are the records committed last, for changes without a read
	// (known.go).
	known knownRecords
}

// New returns a Service storing sessions in rdb.
func New(rdb redis.UniversalClient, cfg Config) *Service {
	cfg.setDefaults()
	return &Service{cfg: cfg, rdb: rdb, keys: keyspace.New(cfg.Namespace), now: func() time.Time { return cfg.Now().UTC() }}
}

// Config returns the service's configuration with defaults filled in.
func (s *Service) Config() Config { return s.cfg }

// Keys returns the service's key space.
func (s *Service) Keys() keyspace.Space { return s.keys }

// Option changes one operation.
type Option func(*options)

type options struct {
	once    string
	onceTTL time.Duration
}

// Once spends key (SET NX, kept for ttl) in the operation's first round
// trip (its read, or its commit when it needs no read); if it was spent
// already the operation returns
// ErrReplayed and reads and changes nothing. The key must be in the shard
// of the session the operation acts on (ShardOfSession, ShardOfRef): the
// admin API keeps request nonces this way.
func Once(key string, ttl time.Duration) Option {
	return func(o *options) { o.once, o.onceTTL = key, ttl }
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// ShardOfSession is the shard of session id's keys; ok is false for an id
// sessiond never made.
func ShardOfSession(id string) (keyspace.Shard, bool) {
	if checkID(id) != nil {
		return 0, false
	}
	return keyspace.SessionShard(id)
}

// ShardOfRef is the shard of a ref_id's sessions.
func ShardOfRef(refID string) keyspace.Shard { return keyspace.ShardOf(refID) }
