package lifecycle

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// errNoop aborts a mutation that has nothing to change.
var errNoop = errors.New("nothing to change")

// edit changes a record in place and names the events it causes.
type edit func(r *record, now time.Time) (events []string, err error)

// mutation is the outcome of mutate.
type mutation struct {
	rec     *record
	token   string // the new token, when the edit asked for one
	changed bool   // a change was committed
}

// mutateSpec says how mutate reads and commits.
type mutateSpec struct {
	issueToken  bool // a fresh token replaces the old one
	readDetails bool // the edit may redact: the event details are rewritten
}

// mutate applies ed to session id: one read, one commit, again from the
// read if the session changed meanwhile. A pending session already past
// its expires_at is expired first, in the same commit, so no operation
// ever acts on a session that should have expired; if ed then refuses,
// the expiry alone is committed and ed's error returned.
func (s *Service) mutate(ctx context.Context, id string, o options, spec mutateSpec, ed edit) (mutation, error) {
	sh, ok := ShardOfSession(id)
	if !ok {
		return mutation{}, ErrNotFound
	}
	if !spec.readDetails {
		if old := s.knownRecord(id); old != nil {
			out, err := s.apply(ctx, sh, id, o, spec, ed, old, nil, true)
			if !errors.Is(err, errNeedRead) {
				return out, err
			}
		}
	}
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx); err != nil {
				return mutation{}, err
			}
		}
		out, err := s.mutateOnce(ctx, sh, id, o, spec, ed)
		o.once = "" // spent by the first read
		if !errors.Is(err, errConflict) {
			return out, err
		}
	}
	return mutation{}, ErrBusy
}

func (s *Service) mutateOnce(ctx context.Context, sh keyspace.Shard, id string, o options, spec mutateSpec, ed edit) (mutation, error) {
	old, evDetails, err := s.readWith(ctx, sh, id, o, false, spec.readDetails)
	if err != nil {
		return mutation{}, err
	}
	return s.apply(ctx, sh, id, o, spec, ed, old, evDetails, false)
}

// apply decides ed on old, the record as read (evDetails: its event
// details, when spec.readDetails), and commits the change. With known, old
// is a record this process committed (known.go), not read: the commit
// also spends o's nonce, and apply returns errNeedRead, having written
// nothing, when the change must be decided on a read instead (a refusal,
// nothing to do, a displacement, an erasure, or a version that moved).
func (s *Service) apply(ctx context.Context, sh keyspace.Shard, id string, o options, spec mutateSpec, ed edit, old *record, evDetails map[string]string, known bool) (mutation, error) {
	now := s.now()
	r := old.clone()
	var events []string
	if overdue(r, now) {
		events = append(events, expire(r, now))
	}
	expired := len(events) > 0
	more, edErr := ed(r, now)
	switch {
	case edErr == nil:
		events = append(events, more...)
	case known:
		return mutation{}, errNeedRead
	case expired:
		// Commit the expiry; report the edit's refusal, if any.
		r = old.clone()
		expire(r, now)
		if errors.Is(edErr, errNoop) {
			edErr = nil
		}
	case errors.Is(edErr, errNoop):
		return mutation{rec: old}, nil
	default:
		return mutation{rec: old}, edErr
	}
	becomesActive := r.Status.Active() && !old.Status.Active()
	c := &change{
		old:       old,
		new:       r,
		oldToken:  old.TokenHash,
		events:    events,
		refActive: r.Status.Active() && r.DeletedAt == nil,
	}
	if known && (becomesActive || erases(c)) {
		return mutation{}, errNeedRead
	}
	t := newTx()
	if known && o.once != "" {
		t.spend(o.once, o.onceTTL) // the first guard: a replay is refused first
	}
	var changes []*change
	if becomesActive {
		// Becoming the ref_id's active session: the one the ref key names
		// must be gone, or past its time (then it expires now).
		prev, err := s.displace(ctx, t, sh, r, now)
		if err != nil {
			return mutation{rec: old}, err
		}
		if prev != nil {
			changes = append(changes, prev)
		}
	}
	if old.Status.Active() && !c.refActive {
		t.op("DELIFEQ", s.keys.Ref(sh, r.RefID), id)
	}
	if r.RedactedAt != nil && old.RedactedAt == nil {
		var err error
		if c.details, err = redactAll(evDetails, *r.RedactedAt); err != nil {
			return mutation{}, err
		}
	}
	out := mutation{rec: r, changed: true}
	if spec.issueToken && edErr == nil {
		out.token = s.issueToken(c, now)
	}
	changes = append(changes, c)
	for _, c := range changes {
		if err := s.write(t, c, now); err != nil {
			return mutation{}, err
		}
	}
	if erases(c) {
		s.eraseLinks(ctx, old.Links) // before: see eraseLinks
	}
	err := s.commit(ctx, t)
	if err != nil && !errors.Is(err, ErrNotDurable) {
		s.known.drop(id)
		if known && errors.Is(err, errConflict) {
			return mutation{}, errNeedRead
		}
		return mutation{}, err
	}
	s.known.put(r.clone(), now)
	for _, c := range changes {
		s.afterCommit(ctx, c)
	}
	if erases(c) {
		s.eraseLinks(ctx, old.Links)
	}
	return out, errors.Join(edErr, err)
}

// redactAll returns every event's details without what a redaction
// removes (the constant part stays).
func redactAll(evDetails map[string]string, at Time) (map[string]string, error) {
	out := make(map[string]string, len(evDetails))
	for f, v := range evDetails {
		if f == detailsConstant {
			continue
		}
		red, err := redactDetails(v, at)
		if err != nil {
			return nil, err
		}
		out[f] = red
	}
	return out, nil
}

// erases reports whether change c removes the session's personal data.
func erases(c *change) bool {
	return (c.new.RedactedAt != nil && c.old.RedactedAt == nil) || (c.new.DeletedAt != nil && c.old.DeletedAt == nil)
}

// ErasedResponse is what a stored response linked to a session holds once
// the session's personal data is gone: a tombstone without personal data.
const ErasedResponse = "erased"

// eraseLinks replaces the values of links, keys in other slots that copy
// the session's personal data, with ErasedResponse (keeping their TTL).
// It runs before the commit that removes the data, so that a crash after
// the commit leaves no copy behind, and after it, for a copy written in
// between (whoever writes one checks Erased afterwards).
func (s *Service) eraseLinks(ctx context.Context, links []string) {
	if len(links) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range links {
			p.SetArgs(ctx, k, ErasedResponse, redis.SetArgs{Mode: "XX", KeepTTL: true})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		s.cfg.Logger.Warn("erase stored responses", "err", err.Error())
	}
}

// displace adds to t what makes r the ref_id's active session: the ref
// key must still name what it names now, and that session must be gone,
// no longer active, or past its time limit (then it expires in the same
// commit, and its change is returned). ErrRefBusy when it is active.
func (s *Service) displace(ctx context.Context, t *tx, sh keyspace.Shard, r *record, now time.Time) (*change, error) {
	refKey := s.keys.Ref(sh, r.RefID)
	owner, err := s.rdb.Get(ctx, refKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read ref: %w", err)
	}
	t.expectValue(refKey, owner)
	if owner == "" || owner == r.ID {
		return nil, nil
	}
	old, err := s.read(ctx, sh, owner, options{}, false)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !old.Status.Active() {
		return nil, nil
	}
	if !overdue(old, now) {
		return nil, ErrRefBusy
	}
	prev := old.clone()
	return &change{old: old, new: prev, oldToken: old.TokenHash, events: []string{expire(prev, now)}}, nil
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
	// Link is a key (in another slot) that will hold a copy of the
	// response, a stored Idempotency-Key answer: the session's redaction,
	// delete and purge erase it (ErasedResponse).
	Link string `json:"-"`
}

// Validate checks r and normalises its optional objects.
func (r *CreateRequest) Validate() error {
	if err := checkName("ref_id", r.RefID, true); err != nil {
		return err
	}
	if err := checkName("flow_id", r.FlowID, false); err != nil {
		return err
	}
	var err error
	if r.Person, err = objectOrNil("person", r.Person); err != nil {
		return err
	}
	if r.Metadata, err = objectOrNil("metadata", r.Metadata); err != nil {
		return err
	}
	return nil
}

//go:embed scripts/readref.lua
var readRefLua string

var readRefScript = redis.NewScript(readRefLua)

// Create makes a session for req.RefID, or returns the ref_id's active
// session with its time limit extended and a fresh token. With
// ForceCreation it always makes a new session and cancels the active one.
// A ref_id without an active session costs one round trip: the new
// session is committed on the guard that the ref_id has none.
func (s *Service) Create(ctx context.Context, req CreateRequest, opts ...Option) (*Created, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	o := collect(opts)
	sh := ShardOfRef(req.RefID)
	refKey := s.keys.Ref(sh, req.RefID)
	out, err := s.createNew(ctx, sh, req, o, "", nil)
	if !errors.Is(err, errConflict) {
		return out, wrap("create session", err)
	}
	// The ref_id has (or just got) an active session.
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx); err != nil {
				return nil, err
			}
		}
		owner, err := s.readRef(ctx, sh, refKey, o)
		o.once = ""
		if err != nil {
			return nil, wrap("create session", err)
		}
		out, err = s.createBeside(ctx, sh, req, owner)
		if !errors.Is(err, errConflict) {
			return out, wrap("create session", err)
		}
	}
	return nil, ErrBusy
}

// wrap adds the operation to a server-side error; the caller's own errors
// (bad input, refusals) stay as they are.
func wrap(op string, err error) error {
	if err == nil || isClientError(err) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// readRef reads the ref_id's active session (nil when there is none)
// with its id in one round trip, spending o.once.
func (s *Service) readRef(ctx context.Context, sh keyspace.Shard, refKey string, o options) (*ownerRead, error) {
	keys := []string{refKey, refKey}
	ttl := ""
	if o.once != "" {
		keys[1], ttl = o.once, strconv.FormatInt(max(o.onceTTL.Milliseconds(), 1), 10)
	}
	reply, err := readRefScript.Run(ctx, s.rdb, keys, s.keys.Session(sh, ""), s.keys.Personal(sh, ""), ttl).Result()
	if err != nil {
		return nil, fmt.Errorf("read ref: %w", err)
	}
	res, ok := reply.([]any)
	if !ok || len(res) != 3 {
		if n, _ := reply.(int64); n == -1 {
			return nil, ErrReplayed
		}
		return nil, fmt.Errorf("read ref: unexpected reply %v", reply)
	}
	str := func(i int) string { v, _ := res[i].(string); return v }
	or := &ownerRead{id: str(0)}
	if or.id == "" || str(1) == "" {
		return or, nil
	}
	pii := redis.NewStringCmd(ctx)
	if p := str(2); p != "" {
		pii.SetVal(p)
	} else {
		pii.SetErr(redis.Nil)
	}
	rec, err := s.decode(or.id, str(1), pii, true)
	if err != nil {
		return nil, err
	}
	if rec.DeletedAt == nil {
		or.rec = rec
	}
	return or, nil
}

// ownerRead is what the ref key named: an id, and its session when that
// is still there (not deleted).
type ownerRead struct {
	id  string
	rec *record
}

// createNew commits a new session for req, guarded on the ref key holding
// owner ("" for none); prev, when not nil, is the owner's change (canceled
// or expired) to commit with it.
func (s *Service) createNew(ctx context.Context, sh keyspace.Shard, req CreateRequest, o options, owner string, prev *change) (*Created, error) {
	now := s.now()
	r := &record{Session: Session{
		ID:        newSessionID(sh),
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
	if req.Link != "" {
		r.Links = []string{req.Link}
	}
	c := &change{new: r, events: []string{StatusCreated.EventType()}, refActive: true}
	token := s.issueToken(c, now)
	t := newTx()
	if o.once != "" {
		t.spend(o.once, o.onceTTL)
	}
	t.expectValue(s.keys.Ref(sh, req.RefID), owner)
	changes := []*change{c}
	if prev != nil {
		changes = append([]*change{prev}, c)
	}
	for _, c := range changes {
		if err := s.write(t, c, now); err != nil {
			return nil, err
		}
	}
	err := s.commit(ctx, t)
	if err != nil && !errors.Is(err, ErrNotDurable) {
		return nil, err
	}
	s.known.put(r.clone(), now)
	for _, c := range changes {
		s.afterCommit(ctx, c)
	}
	return &Created{Session: r.Session, Token: token, TokenExpiresAt: *r.TokenExpiresAt, New: true}, err
}

// createBeside creates with the ref_id's active session as read: it
// returns that session extended and with a fresh token, or (forced)
// cancels it and makes a new one; when it is gone or over, a new one
// takes the ref key.
func (s *Service) createBeside(ctx context.Context, sh keyspace.Shard, req CreateRequest, owner *ownerRead) (*Created, error) {
	if owner.rec == nil {
		return s.createNew(ctx, sh, req, options{}, owner.id, nil)
	}
	now := s.now()
	old := owner.rec
	r := old.clone()
	var events []string
	if overdue(r, now) {
		events = append(events, expire(r, now))
	}
	c := &change{old: old, new: r, oldToken: old.TokenHash, events: events}
	switch {
	case r.Status.Active() && !req.ForceCreation:
		// Idempotent create: extend and reissue.
		if r.Status.Pending() {
			r.ExpiresAt = deadline(now.Add(s.cfg.SessionTTL)).Ptr()
		}
		r.UpdatedAt, r.RetainFrom = At(now), At(now)
		if req.Link != "" {
			r.Links = append(r.Links, req.Link)
		}
		token := s.issueToken(c, now)
		c.refActive = true
		t := newTx()
		t.expectValue(s.keys.Ref(sh, req.RefID), owner.id)
		if err := s.write(t, c, now); err != nil {
			return nil, err
		}
		err := s.commit(ctx, t)
		if err != nil && !errors.Is(err, ErrNotDurable) {
			return nil, err
		}
		s.known.put(r.clone(), now)
		s.afterCommit(ctx, c)
		return &Created{Session: r.Session, Token: token, TokenExpiresAt: *r.TokenExpiresAt}, err
	case r.Status.Active():
		setStatus(r, StatusCanceled, now)
		c.events = append(c.events, StatusCanceled.EventType())
	}
	if len(c.events) == 0 {
		c = nil
	}
	return s.createNew(ctx, sh, req, options{}, owner.id, c)
}

// Get returns session id. A pending session past its time limit is expired
// on the spot, so a read never shows it pending.
func (s *Service) Get(ctx context.Context, id string, opts ...Option) (*Session, error) {
	sh, ok := ShardOfSession(id)
	if !ok {
		return nil, ErrNotFound
	}
	r, err := s.read(ctx, sh, id, collect(opts), false)
	if err != nil {
		return nil, wrap("get session", err)
	}
	if overdue(r, s.now()) {
		m, err := s.mutate(ctx, id, options{}, mutateSpec{}, noop)
		if err != nil {
			return nil, wrap("get session", err)
		}
		return &m.rec.Session, nil
	}
	return &r.Session, nil
}

func noop(*record, time.Time) ([]string, error) { return nil, errNoop }

// Introspect returns the active session a live token belongs to and when
// the token stops working. A token lives TokenTTL on the injected clock,
// and only while it is its session's current one and the session is
// active; any other token is ErrNotFound.
func (s *Service) Introspect(ctx context.Context, token string, opts ...Option) (*Session, Time, error) {
	sh, ok := tokenShard(token)
	if !ok {
		if o := collect(opts); o.once != "" {
			// Spend the nonce anyway: a replay is refused whatever it asks.
			if fresh, err := s.rdb.SetNX(ctx, o.once, 1, o.onceTTL).Result(); err != nil {
				return nil, Time{}, err
			} else if !fresh {
				return nil, Time{}, ErrReplayed
			}
		}
		return nil, Time{}, ErrNotFound
	}
	hash := hashToken(token)
	o := collect(opts)
	p := s.rdb.Pipeline()
	var once *redis.BoolCmd
	if o.once != "" {
		once = p.SetNX(ctx, o.once, 1, o.onceTTL)
	}
	idCmd := p.Get(ctx, s.keys.Token(sh, hash))
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, Time{}, fmt.Errorf("read token: %w", err)
	}
	if once != nil && !once.Val() {
		return nil, Time{}, ErrReplayed
	}
	id := idCmd.Val()
	if id == "" {
		return nil, Time{}, ErrNotFound
	}
	sess, err := s.Get(ctx, id)
	if err != nil {
		return nil, Time{}, err
	}
	r, err := s.read(ctx, sh, id, options{}, false)
	if err != nil {
		return nil, Time{}, err
	}
	exp := r.TokenExpiresAt
	if r.TokenHash != hash || exp == nil || !s.now().Before(exp.Time) || !sess.Status.Active() {
		return nil, Time{}, ErrNotFound
	}
	return sess, *exp, nil
}

// SessionForToken returns the active session a live token belongs to.
func (s *Service) SessionForToken(ctx context.Context, token string) (*Session, error) {
	sess, _, err := s.Introspect(ctx, token)
	return sess, err
}

// Erased reports whether session id's personal data is gone: it was
// redacted, deleted or purged.
func (s *Service) Erased(ctx context.Context, id string) (bool, error) {
	sh, ok := ShardOfSession(id)
	if !ok {
		return true, nil
	}
	r, err := s.read(ctx, sh, id, options{}, true)
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return r.RedactedAt != nil || r.DeletedAt != nil, nil
}

// UpdateRequest is the body of PATCH /v1/sessions/{id}. Absent fields stay.
type UpdateRequest struct {
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Tags     *[]string       `json:"tags,omitempty"`
}

// Update replaces a session's metadata and/or tags.
func (s *Service) Update(ctx context.Context, id string, req UpdateRequest, opts ...Option) (*Session, error) {
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
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{}, func(r *record, now time.Time) ([]string, error) {
		if r.RedactedAt != nil && (meta != nil || (req.Tags != nil && len(*req.Tags) > 0)) {
			return nil, invalid("body", "the session is redacted; personal data cannot be added back")
		}
		if len(req.Metadata) > 0 {
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
func (s *Service) Progress(ctx context.Context, id string, to Status, opts ...Option) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	switch to {
	case StatusStarted, StatusSubmitted, StatusReview:
	default:
		return nil, invalid("status", `must be "started", "submitted" or "review"`)
	}
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{}, transition(to))
	return result(m, err, "progress session")
}

// DecisionRequest is the body of POST /v1/sessions/{id}/decision.
type DecisionRequest struct {
	Status     Status `json:"status"`
	Reason     string `json:"reason,omitempty"`
	ReasonCode *int   `json:"reason_code,omitempty"`
}

// Decide records a verification decision.
func (s *Service) Decide(ctx context.Context, id string, req DecisionRequest, opts ...Option) (*Session, error) {
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
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{}, func(r *record, now time.Time) ([]string, error) {
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
func (s *Service) Cancel(ctx context.Context, id string, opts ...Option) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{}, transition(StatusCanceled))
	return result(m, err, "cancel session")
}

// Expire ends a pending session now: created and resubmission_requested
// become expired, started becomes abandoned.
func (s *Service) Expire(ctx context.Context, id string, opts ...Option) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{}, func(r *record, now time.Time) ([]string, error) {
		if !r.Status.Pending() {
			return nil, &TransitionError{From: r.Status, To: expiryStatus(r.Status)}
		}
		return []string{expire(r, now)}, nil
	})
	if errors.Is(err, ErrInvalidTransition) && m.changed && (m.rec.Status == StatusExpired || m.rec.Status == StatusAbandoned) {
		// It was overdue and has just been expired by this very call.
		return &m.rec.Session, nil
	}
	return result(m, err, "expire session")
}

// ExpireDue expires session id if it is pending and its time has come; it
// reports whether it did. The scheduler calls it; running it twice, or on a
// session that moved on, changes nothing.
func (s *Service) ExpireDue(ctx context.Context, id string) (bool, error) {
	m, err := s.mutate(ctx, id, options{}, mutateSpec{}, noop)
	if errors.Is(err, ErrNotFound) {
		return false, s.dropDue(ctx, id, WorkExpire)
	}
	if err != nil {
		return false, fmt.Errorf("expire due session: %w", err)
	}
	return m.changed, nil
}

// Resume takes an expired or abandoned session back to the active status
// it had, with a fresh token and time limit; its progress is kept.
func (s *Service) Resume(ctx context.Context, id string, opts ...Option) (*Created, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{issueToken: true}, func(r *record, now time.Time) ([]string, error) {
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
func (s *Service) Delete(ctx context.Context, id string, opts ...Option) error {
	if err := checkID(id); err != nil {
		return err
	}
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{}, func(r *record, now time.Time) ([]string, error) {
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

// Redact removes a session's personal data (person, metadata, tags, the
// decision's reason) for good, from the session and its events. A second
// redaction changes nothing.
func (s *Service) Redact(ctx context.Context, id string, opts ...Option) (*Session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m, err := s.mutate(ctx, id, collect(opts), mutateSpec{readDetails: true}, redact(nil))
	return result(m, err, "redact session")
}

// redact is the redaction edit; due, when set, refuses it until then.
func redact(due func(r *record, now time.Time) bool) edit {
	return func(r *record, now time.Time) ([]string, error) {
		if r.RedactedAt != nil || (due != nil && !due(r, now)) {
			return nil, errNoop
		}
		r.Person, r.Metadata = nil, nil
		r.Tags = []string{}
		if r.Decision != nil {
			r.Decision.Reason = ""
		}
		r.RedactedAt = At(now).Ptr()
		r.UpdatedAt = At(now)
		return []string{EventRedacted}, nil
	}
}

// result is an operation's answer: the session it left, or why not (a
// change that committed without enough replicas is ErrNotDurable too).
func result(m mutation, err error, op string) (*Session, error) {
	if err != nil {
		return nil, wrap(op, err)
	}
	return &m.rec.Session, nil
}

// isClientError reports whether err is the caller's fault, to be returned
// as is.
func isClientError(err error) bool {
	var v *ValidationError
	return errors.As(err, &v) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidTransition) ||
		errors.Is(err, ErrSessionInProgress) || errors.Is(err, ErrNotCompleted) || errors.Is(err, ErrRefBusy) ||
		errors.Is(err, ErrReplayed)
}

// checkID accepts the session ids sessiond makes: lowercase UUIDs whose
// last digit names a shard.
func checkID(id string) error {
	if err := uuid.Validate(id); err != nil || len(id) != 36 {
		return ErrNotFound
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c >= 'A' && c <= 'F' {
			return ErrNotFound
		}
	}
	if _, ok := keyspace.SessionShard(id); !ok {
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
