package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// op is one operation of the state machine, applied to a session by id.
type op struct {
	name string
	do   func(ctx context.Context, s *Service, id string) error
}

func progressOp(to Status) op {
	return op{"progress_" + string(to), func(ctx context.Context, s *Service, id string) error {
		_, err := s.Progress(ctx, id, to)
		return err
	}}
}

func decideOp(to Status) op {
	return op{"decide_" + string(to), func(ctx context.Context, s *Service, id string) error {
		_, err := s.Decide(ctx, id, DecisionRequest{Status: to, Reason: "because"})
		return err
	}}
}

// machineOps is every operation of the machine.
var machineOps = []op{
	progressOp(StatusStarted),
	progressOp(StatusSubmitted),
	progressOp(StatusReview),
	decideOp(StatusApproved),
	decideOp(StatusDeclined),
	decideOp(StatusResubmissionRequested),
	{"cancel", func(ctx context.Context, s *Service, id string) error { _, err := s.Cancel(ctx, id); return err }},
	{"expire", func(ctx context.Context, s *Service, id string) error { _, err := s.Expire(ctx, id); return err }},
	{"resume", func(ctx context.Context, s *Service, id string) error { _, err := s.Resume(ctx, id); return err }},
	{"delete", func(ctx context.Context, s *Service, id string) error { return s.Delete(ctx, id) }},
	{"redact", func(ctx context.Context, s *Service, id string) error { _, err := s.Redact(ctx, id); return err }},
}

func machineOp(name string) op {
	for _, o := range machineOps {
		if o.name == name {
			return o
		}
	}
	panic("no op " + name)
}

// machineSetups brings a fresh session into each status: the operations
// to apply after create, and the events they leave in the outbox.
var machineSetups = []struct {
	name   string
	status Status
	steps  []string
	events []string
}{
	{"created", StatusCreated, nil, []string{"session.created"}},
	{"started", StatusStarted, []string{"progress_started"}, []string{"session.created", "session.started"}},
	{"submitted", StatusSubmitted, []string{"progress_started", "progress_submitted"},
		[]string{"session.created", "session.started", "session.submitted"}},
	{"review", StatusReview, []string{"progress_started", "progress_submitted", "progress_review"},
		[]string{"session.created", "session.started", "session.submitted", "session.review"}},
	{"resubmission_requested", StatusResubmissionRequested, []string{"progress_started", "progress_submitted", "decide_resubmission_requested"},
		[]string{"session.created", "session.started", "session.submitted", "session.resubmission_requested"}},
	{"approved", StatusApproved, []string{"progress_started", "progress_submitted", "decide_approved"},
		[]string{"session.created", "session.started", "session.submitted", "session.approved"}},
	{"declined", StatusDeclined, []string{"progress_started", "progress_submitted", "decide_declined"},
		[]string{"session.created", "session.started", "session.submitted", "session.declined"}},
	{"expired", StatusExpired, []string{"expire"}, []string{"session.created", "session.expired"}},
	{"expired_from_resubmission", StatusExpired, []string{"progress_started", "progress_submitted", "decide_resubmission_requested", "expire"},
		[]string{"session.created", "session.started", "session.submitted", "session.resubmission_requested", "session.expired"}},
	{"abandoned", StatusAbandoned, []string{"progress_started", "expire"}, []string{"session.created", "session.started", "session.abandoned"}},
	{"canceled", StatusCanceled, []string{"cancel"}, []string{"session.created", "session.canceled"}},
}

// transitionTable is the contract's state machine, written out for every
// status and operation. An outcome is
//
//	"-"                   refused: 409, ErrInvalidTransition, nothing changes
//	"in_progress"         delete refused: 400 code 1306, nothing changes
//	"<status>: <events>"  allowed: the new status and the events appended
//	"deleted: <events>"   allowed delete: the events appended, then 404
var transitionTable = map[string]map[string]string{
	"created": {
		"progress_started": "started: session.started", "progress_submitted": "submitted: session.submitted", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "canceled: session.canceled", "expire": "expired: session.expired", "resume": "-",
		"delete": "deleted: session.expired session.deleted", "redact": "created: session.redacted",
	},
	"started": {
		"progress_started": "-", "progress_submitted": "submitted: session.submitted", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "canceled: session.canceled", "expire": "abandoned: session.abandoned", "resume": "-",
		"delete": "deleted: session.abandoned session.deleted", "redact": "started: session.redacted",
	},
	"submitted": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "review: session.review",
		"decide_approved": "approved: session.approved", "decide_declined": "declined: session.declined",
		"cancel": "canceled: session.canceled", "expire": "-", "resume": "-",
		"delete": "in_progress", "decide_resubmission_requested": "resubmission_requested: session.resubmission_requested",
		"redact": "submitted: session.redacted",
	},
	"review": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "approved: session.approved", "decide_declined": "declined: session.declined",
		"cancel": "canceled: session.canceled", "expire": "-", "resume": "-",
		"delete": "deleted: session.deleted", "decide_resubmission_requested": "resubmission_requested: session.resubmission_requested",
		"redact": "review: session.redacted",
	},
	"resubmission_requested": {
		"progress_started": "started: session.started", "progress_submitted": "submitted: session.submitted", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "canceled: session.canceled", "expire": "expired: session.expired", "resume": "-",
		"delete": "deleted: session.expired session.deleted", "redact": "resubmission_requested: session.redacted",
	},
	"approved": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "-", "expire": "-", "resume": "-",
		"delete": "deleted: session.deleted", "redact": "approved: session.redacted",
	},
	"declined": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "-", "expire": "-", "resume": "-",
		"delete": "deleted: session.deleted", "redact": "declined: session.redacted",
	},
	"expired": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "-", "expire": "-", "resume": "created: session.resumed",
		"delete": "deleted: session.deleted", "redact": "expired: session.redacted",
	},
	"expired_from_resubmission": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "-", "expire": "-", "resume": "resubmission_requested: session.resumed",
		"delete": "deleted: session.deleted", "redact": "expired: session.redacted",
	},
	"abandoned": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "-", "expire": "-", "resume": "started: session.resumed",
		"delete": "deleted: session.deleted", "redact": "abandoned: session.redacted",
	},
	"canceled": {
		"progress_started": "-", "progress_submitted": "-", "progress_review": "-",
		"decide_approved": "-", "decide_declined": "-", "decide_resubmission_requested": "-",
		"cancel": "-", "expire": "-", "resume": "-",
		"delete": "deleted: session.deleted", "redact": "canceled: session.redacted",
	},
}

// TestTransitions applies every operation to a session in every status and
// checks the outcome against transitionTable, straight from Redis, on
// every topology.
func TestTransitions(t *testing.T) {
	if len(transitionTable) != len(machineSetups) {
		t.Fatalf("transitionTable has %d rows, want %d", len(transitionTable), len(machineSetups))
	}
	for _, setup := range machineSetups {
		row := transitionTable[setup.name]
		if len(row) != len(machineOps) {
			t.Fatalf("transitionTable[%s] has %d entries, want %d", setup.name, len(row), len(machineOps))
		}
		for _, o := range machineOps {
			if _, ok := row[o.name]; !ok {
				t.Fatalf("transitionTable[%s] lacks %s", setup.name, o.name)
			}
		}
	}
	forEachTopology(t, func(t *testing.T, e *env) {
		for _, setup := range machineSetups {
			for _, o := range machineOps {
				want := transitionTable[setup.name][o.name]
				t.Run(setup.name+"/"+o.name, func(t *testing.T) {
					t.Parallel()
					checkTransition(e.with(t), setup.name, setup.status, setup.steps, setup.events, o, want)
				})
			}
		}
	})
}

// checkTransition brings a fresh session (with personal data, metadata and
// a tag) into status through steps, applies o and checks the outcome want
// (see transitionTable).
func checkTransition(e *env, setup string, status Status, steps, events []string, o op, want string) {
	t := e.t
	t.Helper()
	id := e.createWith(CreateRequest{
		RefID:    t.Name(),
		Person:   json.RawMessage(`{"name":"Ada"}`),
		Metadata: json.RawMessage(`{"m":1}`),
	}).ID
	if _, err := e.svc.Update(e.ctx, id, UpdateRequest{Tags: &[]string{"vip"}}); err != nil {
		t.Fatalf("setup tags: %v", err)
	}
	for _, step := range steps {
		if err := machineOp(step).do(e.ctx, e.svc, id); err != nil {
			t.Fatalf("setup %s: %v", step, err)
		}
	}
	if got := e.get(id).Status; got != status {
		t.Fatalf("setup: status %s, want %s", got, status)
	}
	if got := e.eventTypes(id); !slices.Equal(got, events) {
		t.Fatalf("setup events %v, want %v", got, events)
	}
	before := e.sessionState(id)
	beforeRec := e.record(id)

	err := o.do(e.ctx, e.svc, id)

	switch want {
	case "-", "in_progress":
		wantErr := ErrInvalidTransition
		if want == "in_progress" {
			wantErr = ErrSessionInProgress
		}
		if !errors.Is(err, wantErr) {
			t.Fatalf("%s in %s: err %v, want %v", o.name, setup, err, wantErr)
		}
		if after := e.sessionState(id); after != before {
			t.Errorf("refused %s changed the session:\nbefore %s\nafter  %s", o.name, before, after)
		}
		if got := e.get(id).Status; got != status {
			t.Errorf("status after refused %s: %s, want %s", o.name, got, status)
		}
	default:
		if err != nil {
			t.Fatalf("%s in %s: %v", o.name, setup, err)
		}
		to, evs, _ := strings.Cut(want, ": ")
		wantEvents := append(slices.Clone(events), strings.Fields(evs)...)
		if got := e.eventTypes(id); !slices.Equal(got, wantEvents) {
			t.Errorf("events after %s: %v, want %v", o.name, got, wantEvents)
		}
		rec := e.record(id)
		if rec.Version != beforeRec.Version+1 {
			t.Errorf("version %d -> %d, want one write", beforeRec.Version, rec.Version)
		}
		if to == "deleted" {
			checkGone(t, e, id)
			break
		}
		s := e.get(id)
		if s.Status != Status(to) {
			t.Errorf("status after %s: %s, want %s", o.name, s.Status, to)
		}
		if strings.HasPrefix(o.name, "decide_") && (s.Decision == nil || s.Decision.Status != s.Status || s.Decision.Reason != "because") {
			t.Errorf("decide: decision %+v", s.Decision)
		}
		if o.name == "redact" {
			if s.RedactedAt == nil || s.Person != nil || s.Metadata != nil || len(s.Tags) != 0 || (s.Decision != nil && s.Decision.Reason != "") {
				t.Errorf("redacted session %+v (decision %+v)", s, s.Decision)
			}
		} else if string(s.Person) != `{"name":"Ada"}` || !slices.Equal(s.Tags, []string{"vip"}) {
			t.Errorf("%s lost personal data or tags: %+v", o.name, s)
		}
	}
	e.checkSession(id)
}

// checkGone checks that a deleted session is gone from every read and
// every operation at once.
func checkGone(t testing.TB, e *env, id string) {
	t.Helper()
	if _, err := e.svc.Get(e.ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after delete: %v, want ErrNotFound", err)
	}
	rec := e.record(id)
	page, err := e.svc.List(e.ctx, ListQuery{RefID: rec.RefID})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(page.Sessions) != 0 {
		t.Errorf("List by ref after delete: %d sessions", len(page.Sessions))
	}
	page, err = e.svc.List(e.ctx, ListQuery{Limit: MaxListLimit})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, s := range page.Sessions {
		if s.ID == id {
			t.Errorf("List after delete shows the session")
		}
	}
	for _, o := range machineOps {
		if err := o.do(e.ctx, e.svc, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after delete: %v, want ErrNotFound", o.name, err)
		}
	}
	if _, err := e.svc.Update(e.ctx, id, UpdateRequest{Tags: &[]string{"x"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update after delete: %v, want ErrNotFound", err)
	}
	if ok, err := e.svc.ExpireDue(e.ctx, id); ok || err != nil {
		t.Errorf("ExpireDue after delete = %v, %v; want false, nil", ok, err)
	}
}

// TestDeleteRefusalCodes covers the delete rules of the contract: every
// status but submitted may be deleted; submitted is "in progress" (1306);
// anything else is "not in a completed status" (1305).
func TestDeleteRefusalCodes(t *testing.T) {
	t.Parallel()
	for _, s := range Statuses {
		err := deleteRefusal(s)
		switch s {
		case StatusSubmitted:
			if !errors.Is(err, ErrSessionInProgress) {
				t.Errorf("deleteRefusal(%s) = %v, want ErrSessionInProgress", s, err)
			}
		default:
			if err != nil {
				t.Errorf("deleteRefusal(%s) = %v, want nil", s, err)
			}
		}
	}
	if err := deleteRefusal(Status("inflow_completed")); !errors.Is(err, ErrNotCompleted) {
		t.Errorf("deleteRefusal(unknown) = %v, want ErrNotCompleted", err)
	}
}

// TestObserver checks that the observer hears every committed status
// change and nothing else.
func TestObserver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create("obs").ID
	if _, err := e.svc.Progress(e.ctx, id, StatusStarted); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Progress(e.ctx, id, StatusReview); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("refused progress: %v", err)
	}
	if _, err := e.svc.Update(e.ctx, id, UpdateRequest{Tags: &[]string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Expire(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Resume(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	want := []string{">created", "created>started", "started>abandoned", "abandoned>started", "started>abandoned"}
	if got := e.obs.all(); !slices.Equal(got, want) {
		t.Errorf("observer heard %v, want %v", got, want)
	}
	if lags := e.obs.expiryLags(); len(lags) != 0 {
		t.Errorf("forced expiries reported lags %v, want none", lags)
	}
}

func TestObserverHearsExpiryLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.create("ref")
	e.clock.Advance(testSessionTTL + 1234*time.Millisecond)
	if got := e.get(c.ID).Status; got != StatusExpired {
		t.Fatalf("status %s after the time limit, want expired", got)
	}
	if lags := e.obs.expiryLags(); !slices.Equal(lags, []time.Duration{1234 * time.Millisecond}) {
		t.Errorf("expiry lags %v, want [1.234s]", lags)
	}
}
