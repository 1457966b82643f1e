package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures a Service. Zero values mean the documented defaults.
type Config struct {
	SessionTTL      time.Duration // pending time limit; default 24h
	TokenTTL        time.Duration // token lifetime; default 30m
	PurgeAfter      time.Duration // deleted data leaves Redis after; default 12h
	Retention       time.Duration // terminal sessions are redacted after; default 720h
	EventsRetention time.Duration // the outbox keeps events for; default 168h

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
	def(&c.EventsRetention, 168*time.Hour)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// WorkKind names a kind of timed work.
type WorkKind string

// The kinds of timed work.
const (
	WorkExpire WorkKind = "expire"
	WorkRedact WorkKind = "redact"
	WorkPurge  WorkKind = "purge"
)

// Work is timed work on one session, due at At.
type Work struct {
	Kind      WorkKind
	SessionID string
	Version   int64 // the session's version when the work was set
	At        time.Time
}

// Timer is told of timed work once the change that set it has committed.
// It is a fast path only: the due indexes (ExpireDueKey, RedactDueKey,
// PurgeDueKey) hold the same work durably, so a lost call delays nothing
// past the scheduler's sweep. Schedule must not block for long.
type Timer interface {
	Schedule(ctx context.Context, w Work)
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
	cfg Config
	rdb redis.UniversalClient
	now func() time.Time
}

// New returns a Service storing sessions in rdb.
func New(rdb redis.UniversalClient, cfg Config) *Service {
	cfg.setDefaults()
	return &Service{cfg: cfg, rdb: rdb, now: func() time.Time { return cfg.Now().UTC() }}
}

// Config returns the service's configuration with defaults filled in.
func (s *Service) Config() Config { return s.cfg }
