package dispatcher

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

// Delivery statuses.
const (
	StatusPending   = "pending"   // not attempted yet, or replayed
	StatusSucceeded = "succeeded" // the last attempt got a 2xx
	StatusFailed    = "failed"    // the last attempt failed; a retry is scheduled
	StatusDead      = "dead"      // no more retries; replayable
)

// Delivery is one event's delivery to one endpoint, as the admin API shows it.
type Delivery struct {
	ID         string         `json:"id"`
	EventID    string         `json:"event_id"`
	EventType  string         `json:"event_type"`
	SessionID  string         `json:"session_id"`
	EndpointID string         `json:"endpoint_id"`
	URL        string         `json:"url"` // without its password
	Status     string         `json:"status"`
	Error      string         `json:"error,omitempty"` // why it is dead when no attempt says
	CreatedAt  lifecycle.Time `json:"created_at"`
	UpdatedAt  lifecycle.Time `json:"updated_at"`
	Attempts   []Attempt      `json:"attempts"`
}

// Attempt is one HTTP attempt of a delivery.
type Attempt struct {
	Attempt    int            `json:"attempt"` // webhook-attempt: 1, 2, ... across retries and replays
	At         lifecycle.Time `json:"at"`
	StatusCode int            `json:"status_code"` // 0 when there was no HTTP answer
	LatencyMS  float64        `json:"latency_ms"`
	Error      string         `json:"error,omitempty"`
	// ResponseBody is the start of the receiver's answer, at most
	// Config.ResponseBodyLimit bytes; ResponseTruncated says there was more.
	ResponseBody      string `json:"response_body,omitempty"`
	ResponseTruncated bool   `json:"response_truncated,omitempty"`
}

var (
	//go:embed scripts/record.lua
	recordLua string
	//go:embed scripts/attempt.lua
	attemptLua string
	//go:embed scripts/replay.lua
	replayLua string

	recordScript  = redis.NewScript(recordLua)
	attemptScript = redis.NewScript(attemptLua)
	replayScript  = redis.NewScript(replayLua)
)

// maxRecordFields bounds a delivery record: about 100 attempts.
const maxRecordFields = 120

// attemptField prefixes the record fields that hold attempts.
const attemptField = "a:"

// maxListed bounds the deliveries one session lists.
const maxListed = 1000

// store keeps delivery records and endpoint marks in Redis.
type store struct {
	rdb       redis.UniversalClient
	now       func() time.Time
	retention time.Duration
}

// newDelivery is a record the relay creates.
type newDelivery struct {
	id, sessionID, eventID, eventType, endpointID, url, cursor string
	eventAt                                                    time.Time
}

// create makes the records of ds, one pipeline for all, and returns the
// status each already had ("" for a new one).
func (s *store) create(ctx context.Context, ds []*newDelivery) ([]string, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	now := s.now()
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	cmds, err := s.pipeline(ctx, func(p redis.Pipeliner) {
		for _, d := range ds {
			ttl := d.eventAt.Add(s.retention).Sub(now).Milliseconds()
			recordScript.EvalSha(ctx, p, []string{deliveryKey(d.sessionID, d.id), deliveriesKey(d.sessionID)},
				d.id, ms, ttl,
				"id", d.id, "session_id", d.sessionID, "event_id", d.eventID, "event_type", d.eventType,
				"endpoint_id", d.endpointID, "url", d.url, "cursor", d.cursor,
				"status", StatusPending, "created_at", ms, "updated_at", ms)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("create delivery records: %w", err)
	}
	out := make([]string, len(ds))
	for i, c := range cmds {
		out[i], _ = c.(*redis.Cmd).Text()
	}
	return out, nil
}

// pipeline runs fn's commands in one round trip. Scripts go as EVALSHA;
// if Redis lost them (a restart), they are loaded and the pipeline runs
// again, which the scripts allow.
func (s *store) pipeline(ctx context.Context, fn func(redis.Pipeliner)) ([]redis.Cmder, error) {
	for try := 0; ; try++ {
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { fn(p); return nil })
		if err == nil || try > 0 || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return cmds, err
		}
		for _, sc := range []*redis.Script{recordScript, attemptScript, replayScript, requeueScript} {
			if err := sc.Load(ctx, s.rdb).Err(); err != nil {
				return nil, err
			}
		}
	}
}

// attempt records an attempt (nil: a status change only) and the
// delivery's new status. Nothing is written once the record has expired.
func (s *store) attempt(ctx context.Context, sessionID, id, status string, a *Attempt, deliveryErr string) error {
	var n int
	var js []byte
	if a != nil {
		var err error
		if js, err = json.Marshal(a); err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		n = a.Attempt
	}
	err := attemptScript.Run(ctx, s.rdb, []string{deliveryKey(sessionID, id)},
		status, n, js, s.now().UnixMilli(), deliveryErr, maxRecordFields).Err()
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	return nil
}

// replay numbers a new replay of a delivery and marks it pending. n is 0
// when the record is gone.
func (s *store) replay(ctx context.Context, sessionID, id string) (n int64, previous string, err error) {
	res, err := replayScript.Run(ctx, s.rdb, []string{deliveryKey(sessionID, id)}, s.now().UnixMilli()).Slice()
	if err != nil || len(res) != 2 {
		return 0, "", fmt.Errorf("replay delivery: %w", errors.Join(err, errors.New("unexpected script answer")))
	}
	n, _ = res[0].(int64)
	previous, _ = res[1].(string)
	return n, previous, nil
}

// setStatus puts back a status (after a replay that could not be enqueued).
func (s *store) setStatus(ctx context.Context, sessionID, id, status string) error {
	return s.attempt(ctx, sessionID, id, status, nil, "")
}

// record is a delivery's stored hash.
type record map[string]string

// delivery decodes the record.
func (r record) delivery() Delivery {
	d := Delivery{
		ID:         r["id"],
		EventID:    r["event_id"],
		EventType:  r["event_type"],
		SessionID:  r["session_id"],
		EndpointID: r["endpoint_id"],
		URL:        r["url"],
		Status:     r["status"],
		Error:      r["error"],
		CreatedAt:  msTime(r["created_at"]),
		UpdatedAt:  msTime(r["updated_at"]),
		Attempts:   []Attempt{},
	}
	for k, js := range r {
		if !strings.HasPrefix(k, attemptField) {
			continue
		}
		var a Attempt
		if json.Unmarshal([]byte(js), &a) == nil {
			d.Attempts = append(d.Attempts, a)
		}
	}
	slices.SortFunc(d.Attempts, func(a, b Attempt) int { return cmp.Compare(a.Attempt, b.Attempt) })
	return d
}

// lastAttempt is the highest attempt number recorded.
func (r record) lastAttempt() int {
	last := 0
	for k := range r {
		if n, err := strconv.Atoi(strings.TrimPrefix(k, attemptField)); err == nil && strings.HasPrefix(k, attemptField) {
			last = max(last, n)
		}
	}
	return last
}

// get returns a delivery's record, or nil if there is none.
func (s *store) get(ctx context.Context, sessionID, id string) (record, error) {
	m, err := s.rdb.HGetAll(ctx, deliveryKey(sessionID, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read delivery: %w", err)
	}
	if m["id"] == "" {
		return nil, nil
	}
	return record(m), nil
}

// delivery returns a delivery with its attempts, or nil if there is none.
func (s *store) delivery(ctx context.Context, sessionID, id string) (*Delivery, error) {
	ds, err := s.load(ctx, sessionID, []string{id})
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	return &ds[0], nil
}

// list returns a session's deliveries, oldest first.
func (s *store) list(ctx context.Context, sessionID string) ([]Delivery, error) {
	ids, err := s.rdb.ZRange(ctx, deliveriesKey(sessionID), 0, maxListed-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return s.load(ctx, sessionID, ids)
}

// load reads deliveries in one round trip; expired ones are left out.
func (s *store) load(ctx context.Context, sessionID string, ids []string) ([]Delivery, error) {
	if len(ids) == 0 {
		return []Delivery{}, nil
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.HGetAll(ctx, deliveryKey(sessionID, id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	out := make([]Delivery, 0, len(ids))
	for _, c := range cmds {
		if r := record(c.(*redis.MapStringStringCmd).Val()); r["id"] != "" {
			out = append(out, r.delivery())
		}
	}
	return out, nil
}

func msTime(s string) lifecycle.Time {
	ms, _ := strconv.ParseInt(s, 10, 64)
	return lifecycle.At(time.UnixMilli(ms))
}

// disabledMark says why and when an endpoint was disabled. It holds the
// hash of the URL that answered 410, so configuring a new URL for the
// endpoint enables it again.
type disabledMark struct {
	URLHash string         `json:"url_sha256"`
	At      lifecycle.Time `json:"at"`
	Reason  string         `json:"reason"`
}

// disable marks an endpoint disabled for every replica.
func (s *store) disable(ctx context.Context, ep *endpoint, reason string) error {
	js, err := json.Marshal(disabledMark{URLHash: ep.urlHash, At: lifecycle.At(s.now()), Reason: reason})
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, disabledKey, ep.id, js).Err(); err != nil {
		return fmt.Errorf("disable endpoint: %w", err)
	}
	return nil
}

// enable removes an endpoint's disabled mark.
func (s *store) enable(ctx context.Context, id string) error {
	if err := s.rdb.HDel(ctx, disabledKey, id).Err(); err != nil {
		return fmt.Errorf("enable endpoint: %w", err)
	}
	return nil
}

// marks returns the disabled marks by endpoint id.
func (s *store) marks(ctx context.Context) (map[string]disabledMark, error) {
	m, err := s.rdb.HGetAll(ctx, disabledKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read disabled endpoints: %w", err)
	}
	out := make(map[string]disabledMark, len(m))
	for id, js := range m {
		var mark disabledMark
		if json.Unmarshal([]byte(js), &mark) == nil {
			out[id] = mark
		}
	}
	return out, nil
}
