package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// errNoop aborts a mutation that has nothing to change.
var errNoop = errors.New("nothing to change")

// ErrRefBusy refuses a resume while another session of the same ref_id is
// active: a ref_id has at most one active session.
var ErrRefBusy = errors.New("another session for this ref_id is active")

// edit changes a record in place and names the events it causes.
type edit func(r *record, now time.Time) (events []string, err error)

// mutation is the outcome of mutate.
type mutation struct {
	rec     *record
	token   string // the new token, when the edit asked for one
	changed bool   // a change was committed
}

// mutate applies ed to session id atomically. A pending session already past
// its expires_at is expired first, in the same transaction, so no operation
// ever acts on a session that should have expired; if ed then refuses, the
// expiry alone is committed and ed's error returned. With issueToken a fresh
// token replaces the old one.
func (s *Service) mutate(ctx context.Context, id string, issueToken bool, ed edit) (mutation, error) {
	var out mutation
	var edErr error
	err := s.atomically(ctx, []string{sessionKey(id)}, func(tx *redis.Tx, now time.Time) ([]*change, error) {
		out, edErr = mutation{}, nil
		snap, err := s.load(ctx, tx, id)
		if err != nil {
			return nil, err
		}
		old := snap.rec
		ref := refKey(old.RefID)
		if err := tx.Watch(ctx, ref).Err(); err != nil {
			return nil, fmt.Errorf("watch ref: %w", err)
		}
		owner, err := tx.Get(ctx, ref).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read ref: %w", err)
		}
		r := old.clone()
		var events []string
		if overdue(r, now) {
			events = append(events, expire(r, now))
		}
		expired := len(events) > 0
		more, err := ed(r, now)
		switch {
		case err == nil:
			events = append(events, more...)
		case expired:
			// Commit the expiry; report the edit's refusal, if any.
			if !errors.Is(err, errNoop) {
				edErr = err
			}
			r = old.clone()
			expire(r, now)
		default:
			return nil, err
		}
		var changes []*change
		if r.Status.Active() && !old.Status.Active() && owner != "" && owner != id {
			// Becoming the ref_id's active session: the one the ref points
			// at must be gone, or past its time (then it expires now).
			prev, err := s.displace(ctx, tx, owner, now)
			if err != nil {
				return nil, err
			}
			if prev != nil {
				changes = append(changes, prev)
			}
		}
		c := &change{
			old:       old,
			new:       r,
			oldToken:  snap.tokenHash,
			events:    events,
			refActive: r.Status.Active() && r.DeletedAt == nil,
			refOwned:  owner == id,
		}
		if issueToken && edErr == nil {
			out.token = s.issueToken(c, now)
		}
		out.rec, out.changed = r, true
		return append(changes, c), nil
	})
	if errors.Is(err, errNoop) {
		snap, err := s.load(ctx, s.rdb, id)
		return mutation{rec: snap.rec}, err
	}
	if err != nil {
		return mutation{}, err
	}
	return out, edErr
}

// displace reads session owner, which the ref key names, for another
// session about to become the ref_id's active one. It returns nil when
// owner is gone or no longer active, the change that expires it when it is
// past its time limit, and ErrRefBusy when it is still active.
func (s *Service) displace(ctx context.Context, tx *redis.Tx, owner string, now time.Time) (*change, error) {
	if err := tx.Watch(ctx, sessionKey(owner)).Err(); err != nil {
		return nil, fmt.Errorf("watch session: %w", err)
	}
	snap, err := s.load(ctx, tx, owner)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	old := snap.rec
	if !old.Status.Active() {
		return nil, nil
	}
	if !overdue(old, now) {
		return nil, ErrRefBusy
	}
	r := old.clone()
	return &change{old: old, new: r, oldToken: snap.tokenHash, events: []string{expire(r, now)}}, nil
}

// overdue reports whether r is pending past its time limit.
func overdue(r *record, now time.Time) bool {
	return r.Status.Pending() && r.ExpiresAt != nil && !now.Before(r.ExpiresAt.Time)
}

// expire moves a pending r to expired or abandoned and returns the event.
func expire(r *record, now time.Time) string {
	from := r.Status
	setStatus(r, expiryStatus(from), now)
	r.ExpiredFrom = from
	return r.Status.EventType()
}

// setStatus moves r to status to at now; the time limit follows the status.
func setStatus(r *record, to Status, now time.Time) {
	r.Status = to
	r.UpdatedAt = At(now)
	r.RetainFrom = At(now)
	if !to.Pending() {
		r.ExpiresAt = nil
	}
}

// transition is an edit to status to, if the machine allows it.
func transition(to Status) edit {
	return func(r *record, now time.Time) ([]string, error) {
		if !CanTransition(r.Status, to) {
			return nil, &TransitionError{From: r.Status, To: to}
		}
		setStatus(r, to, now)
		return []string{to.EventType()}, nil
	}
}

// CreateRequest is the body of POST /v1/sessions.
type CreateRequest struct {
	RefID         string          `json:"ref_id"`
	FlowID        string          `json:"flow_id,omitempty"`
	Person        json.RawMessage `json:"person,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	ForceCreation bool            `json:"force_creation,omitempty"`
}

// Validate checks r and normalises its optional objects.
func (r *CreateRequest) Validate() error {
	var errs []error
	if err := checkName("ref_id", r.RefID, true); err != nil {
		errs = append(errs, err)
	}
	if err := checkName("flow_id", r.FlowID, false); err != nil {
		errs = append(errs, err)
	}
	var err error
	if r.Person, err = objectOrNil("person", r.Person); err != nil {
		errs = append(errs, err)
	}
	if r.Metadata, err = objectOrNil("metadata", r.Metadata); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Create makes a session for req.RefID, or returns the ref_id's active
// session with its time limit extended and a fresh token. With
// ForceCreation it always makes a new session and cancels the active one.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*Created, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var out *Created
	err := s.atomically(ctx, []string{refKey(req.RefID)}, func(tx *redis.Tx, now time.Time) ([]*change, error) {
		out = nil
		owner, err := tx.Get(ctx, refKey(req.RefID)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read ref: %w", err)
		}
		var changes []*change
		if owner != "" {
			if err := tx.Watch(ctx, sessionKey(owner)).Err(); err != nil {
				return nil, fmt.Errorf("watch session: %w", err)
			}
			snap, err := s.load(ctx, tx, owner)
			switch {
			case errors.Is(err, ErrNotFound):
				// A stale ref; the new session takes it over.
			case err != nil:
				return nil, err
			default:
				old := snap.rec
				r := old.clone()
				var events []string
				if overdue(r, now) {
					events = append(events, expire(r, now))
				}
				c := &change{old: old, new: r, oldToken: snap.tokenHash, events: events}
				switch {
				case r.Status.Active() && !req.ForceCreation:
					// Idempotent create: extend and reissue.
					if r.Status.Pending() {
						r.ExpiresAt = deadline(now.Add(s.cfg.SessionTTL)).Ptr()
					}
					r.UpdatedAt, r.RetainFrom = At(now), At(now)
					token := s.issueToken(c, now)
					c.refActive = true
					out = &Created{Session: r.Session, Token: token, TokenExpiresAt: *r.TokenExpiresAt}
					return []*change{c}, nil
				case r.Status.Active():
					setStatus(r, StatusCanceled, now)
					c.events = append(c.events, StatusCanceled.EventType())
				}
				if len(c.events) > 0 {
					changes = append(changes, c)
				}
			}
		}
		r := &record{Session: Session{
			ID:        uuid.NewString(),
			RefID:     req.RefID,
			FlowID:    req.FlowID,
			Status:    StatusCreated,
			CreatedAt: At(now),
			UpdatedAt: At(now),
			ExpiresAt: deadline(now.Add(s.cfg.SessionTTL)).Ptr(),
			Metadata:  req.Metadata,
			Tags:      []string{},
			Person:    req.Person,
		}, RetainFrom: At(now)}
		c := &change{new: r, events: []string{StatusCreated.EventType()}, refActive: true}
		token := s.issueToken(c, now)
		out = &Created{Session: r.Session, Token: token, TokenExpiresAt: *r.TokenExpiresAt, New: true}
		return append(changes, c), nil
	})
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	return out, nil
}

// Get returns session id. A pending session past its time limit is expired
// on the spot, so a read never shows it pending.
func (s *Service) Get(ctx context.Context, id string) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	snap, err := s.load(ctx, s.rdb, id)
	if err != nil {
		return nil, err
	}
	if overdue(snap.rec, s.now()) {
		m, err := s.mutate(ctx, id, false, noop)
		if err != nil {
			return nil, err
		}
		return &m.rec.Session, nil
	}
	return &snap.rec.Session, nil
}

func noop(*record, time.Time) ([]string, error) { return nil, errNoop }

// Introspect returns the active session a live token belongs to and when
// the token stops working. A token lives TokenTTL on the injected clock, and
// only while it is its session's current one and the session is active;
// any other token is ErrNotFound.
func (s *Service) Introspect(ctx context.Context, token string) (*Session, Time, error) {
	sess, err := s.SessionForToken(ctx, token)
	if err != nil {
		return nil, Time{}, err
	}
	snap, err := s.load(ctx, s.rdb, sess.ID)
	if err != nil {
		return nil, Time{}, err
	}
	if snap.rec.TokenExpiresAt == nil || snap.tokenHash != hashToken(token) {
		return nil, Time{}, ErrNotFound
	}
	return sess, *snap.rec.TokenExpiresAt, nil
}

// Erased reports whether session id's personal data is gone: it was
// redacted, deleted or purged.
func (s *Service) Erased(ctx context.Context, id string) (bool, error) {
	raw, err := s.rdb.Get(ctx, sessionKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read session: %w", err)
	}
	rec, err := decodeRecord(raw)
	if err != nil {
		return false, err
	}
	return rec.RedactedAt != nil || rec.DeletedAt != nil, nil
}

// SessionForToken returns the active session a live token belongs to. A
// token lives TokenTTL on the injected clock, and only while it is its
// session's current one and the session is active.
func (s *Service) SessionForToken(ctx context.Context, token string) (*Session, error) {
	hash := hashToken(token)
	id, err := s.rdb.Get(ctx, tokenKey(hash)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	snap, err := s.load(ctx, s.rdb, id)
	if err != nil {
		return nil, err
	}
	if exp := snap.rec.TokenExpiresAt; snap.tokenHash != hash || (exp != nil && !s.now().Before(exp.Time)) {
		return nil, ErrNotFound
	}
	sess, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !sess.Status.Active() {
		return nil, ErrNotFound // it expired on this very read
	}
	return sess, nil
}

// UpdateRequest is the body of PATCH /v1/sessions/{id}. Absent fields stay.
type UpdateRequest struct {
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Tags     *[]string       `json:"tags,omitempty"`
}

// Update replaces a session's metadata and/or tags.
func (s *Service) Update(ctx context.Context, id string, req UpdateRequest) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if len(req.Metadata) == 0 && req.Tags == nil {
		return nil, invalid("body", "give metadata or tags")
	}
	meta, err := objectOrNil("metadata", req.Metadata)
	if err != nil {
		return nil, err
	}
	if req.Tags != nil {
		if err := checkTags(*req.Tags); err != nil {
			return nil, err
		}
	}
	m, err := s.mutate(ctx, id, false, func(r *record, now time.Time) ([]string, error) {
		if len(req.Metadata) > 0 {
			if r.RedactedAt != nil && meta != nil {
				return nil, invalid("metadata", "the session is redacted; personal data cannot be added back")
			}
			r.Metadata = meta
		}
		if req.Tags != nil {
			r.Tags = append([]string{}, *req.Tags...)
		}
		r.UpdatedAt = At(now)
		if r.RedactedAt == nil {
			r.RetainFrom = At(now)
		}
		return nil, nil
	})
	return result(m, err, "update session")
}

// Progress moves a session on as the platform reports it: started,
// submitted or review.
func (s *Service) Progress(ctx context.Context, id string, to Status) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	switch to {
	case StatusStarted, StatusSubmitted, StatusReview:
	default:
		return nil, invalid("status", `must be "started", "submitted" or "review"`)
	}
	m, err := s.mutate(ctx, id, false, transition(to))
	return result(m, err, "progress session")
}

// DecisionRequest is the body of POST /v1/sessions/{id}/decision.
type DecisionRequest struct {
	Status     Status `json:"status"`
	Reason     string `json:"reason,omitempty"`
	ReasonCode *int   `json:"reason_code,omitempty"`
}

// Decide records a verification decision.
func (s *Service) Decide(ctx context.Context, id string, req DecisionRequest) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	switch req.Status {
	case StatusApproved, StatusDeclined, StatusResubmissionRequested:
	default:
		return nil, invalid("status", `must be "approved", "declined" or "resubmission_requested"`)
	}
	if utf8.RuneCountInString(req.Reason) > 1024 || !utf8.ValidString(req.Reason) {
		return nil, invalid("reason", "must be valid UTF-8 of at most 1024 characters")
	}
	m, err := s.mutate(ctx, id, false, func(r *record, now time.Time) ([]string, error) {
		events, err := transition(req.Status)(r, now)
		if err != nil {
			return nil, err
		}
		r.Decision = &Decision{Status: req.Status, Reason: req.Reason, ReasonCode: req.ReasonCode, DecidedAt: At(now)}
		if req.Status == StatusResubmissionRequested {
			r.ExpiresAt = deadline(now.Add(s.cfg.SessionTTL)).Ptr()
		}
		return events, nil
	})
	return result(m, err, "decide session")
}

// Cancel cancels an active session.
func (s *Service) Cancel(ctx context.Context, id string) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, false, transition(StatusCanceled))
	return result(m, err, "cancel session")
}

// Expire ends a pending session now: created and resubmission_requested
// become expired, started becomes abandoned.
func (s *Service) Expire(ctx context.Context, id string) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, false, func(r *record, now time.Time) ([]string, error) {
		if !r.Status.Pending() {
			return nil, &TransitionError{From: r.Status, To: expiryStatus(r.Status)}
		}
		return []string{expire(r, now)}, nil
	})
	if errors.Is(err, ErrInvalidTransition) && m.rec != nil && (m.rec.Status == StatusExpired || m.rec.Status == StatusAbandoned) {
		// It was overdue and has just been expired by this very call.
		return &m.rec.Session, nil
	}
	return result(m, err, "expire session")
}

// ExpireDue expires session id if it is pending and its time has come; it
// reports whether it did. The scheduler calls it; running it twice, or on a
// session that moved on, changes nothing.
func (s *Service) ExpireDue(ctx context.Context, id string) (bool, error) {
	m, err := s.mutate(ctx, id, false, noop)
	if errors.Is(err, ErrNotFound) {
		// Deleted or gone: drop a stale due entry, if any.
		if err := s.rdb.ZRem(ctx, ExpireDueKey, id).Err(); err != nil {
			return false, fmt.Errorf("expire due session: %w", err)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("expire due session: %w", err)
	}
	return m.changed, nil
}

// Resume takes an expired or abandoned session back to the active status
// it had, with a fresh token and time limit; its progress is kept.
func (s *Service) Resume(ctx context.Context, id string) (*Created, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, true, func(r *record, now time.Time) ([]string, error) {
		to, ok := resumeStatus(r.Status, r.ExpiredFrom)
		if !ok {
			return nil, &TransitionError{From: r.Status}
		}
		setStatus(r, to, now)
		r.ExpiredFrom = ""
		r.ExpiresAt = deadline(now.Add(s.cfg.SessionTTL)).Ptr()
		return []string{EventResumed}, nil
	})
	if _, err := result(m, err, "resume session"); err != nil {
		return nil, err
	}
	return &Created{Session: m.rec.Session, Token: m.token, TokenExpiresAt: *m.rec.TokenExpiresAt}, nil
}

// Delete deletes a session: it is gone from every read at once and its data
// leaves Redis within PurgeAfter. A pending session is first expired (or
// abandoned), with its event, as if its time had run out.
func (s *Service) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	m, err := s.mutate(ctx, id, false, func(r *record, now time.Time) ([]string, error) {
		if err := deleteRefusal(r.Status); err != nil {
			return nil, err
		}
		var events []string
		if r.Status.Pending() {
			events = append(events, expire(r, now))
		}
		r.DeletedAt = At(now).Ptr()
		r.UpdatedAt = At(now)
		r.Person, r.Metadata = nil, nil
		return append(events, EventDeleted), nil
	})
	_, err = result(m, err, "delete session")
	return err
}

// Redact removes a session's personal data (person, metadata) for good. A
// second redaction changes nothing.
func (s *Service) Redact(ctx context.Context, id string) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, false, redact(nil))
	return result(m, err, "redact session")
}

// redact is the redaction edit; due, when set, refuses it until then.
func redact(due func(r *record, now time.Time) bool) edit {
	return func(r *record, now time.Time) ([]string, error) {
		if r.RedactedAt != nil || (due != nil && !due(r, now)) {
			return nil, errNoop
		}
		r.Person, r.Metadata = nil, nil
		r.RedactedAt = At(now).Ptr()
		r.UpdatedAt = At(now)
		return []string{EventRedacted}, nil
	}
}

func result(m mutation, err error, op string) (*Session, error) {
	if err != nil {
		if isClientError(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return &m.rec.Session, nil
}

// isClientError reports whether err is the caller's fault, to be returned
// as is.
func isClientError(err error) bool {
	var v *ValidationError
	return errors.As(err, &v) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidTransition) ||
		errors.Is(err, ErrSessionInProgress) || errors.Is(err, ErrNotCompleted) || errors.Is(err, ErrRefBusy)
}

func checkID(id string) error {
	if err := uuid.Validate(id); err != nil || len(id) != 36 {
		return ErrNotFound
	}
	return nil
}

func checkName(field, v string, required bool) error {
	if v == "" {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if len(v) > 255 || !utf8.ValidString(v) {
		return invalid(field, "must be valid UTF-8 of at most 255 bytes")
	}
	for _, r := range v {
		// Control (Cc) and format (Cf) characters: bidi overrides and
		// zero-width characters make a value look like another.
		if unicode.In(r, unicode.Cc, unicode.Cf) {
			return invalid(field, "must not contain control or format characters")
		}
	}
	return nil
}

func checkTags(tags []string) error {
	if len(tags) > 50 {
		return invalid("tags", "at most 50 tags")
	}
	for _, t := range tags {
		if t == "" {
			return invalid("tags", "tags must not be empty")
		}
		if err := checkName("tags", t, true); err != nil {
			return err
		}
	}
	return nil
}

// objectOrNil accepts a JSON object, or null/absent as nil.
func objectOrNil(field string, raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid(field, "must be a JSON object")
	}
	return raw, nil
}
