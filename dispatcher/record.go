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

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// Delivery statuses.
const (
	StatusPending   = "pending"   // not attempted yet, deferred, or replayed
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
	URL        string         `json:"url"` // the endpoint's, without its password
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
	// ResponseBody is the start of the receiver's answer to a failed
	// attempt, at most Config.ResponseBodyLimit bytes; ResponseTruncated
	// says there was more. A success keeps no body.
	ResponseBody      string `json:"response_body,omitempty"`
	ResponseTruncated bool   `json:"response_truncated,omitempty"`
}

// storedAttempt is an Attempt as a record keeps it: short names, for a
// small hash.
type storedAttempt struct {
	N         int     `json:"n"`
	At        int64   `json:"at"`
	Code      int     `json:"c,omitempty"`
	LatencyMS float64 `json:"l"`
	Error     string  `json:"e,omitempty"`
	Body      string  `json:"b,omitempty"`
	Truncated bool    `json:"bt,omitempty"`
}

// summary is the first line of a record (record.lua writes it).
type summary struct {
	Status    string `json:"s"`
	Type      string `json:"t"`
	Cursor    string `json:"c"`
	CreatedAt int64  `json:"ca"`
	UpdatedAt int64  `json:"ua"`
	Error     string `json:"e"`
	Attempts  int    `json:"n"`
	Replays   int64  `json:"r"`
}

var (
	//go:embed scripts/record.lua
	recordLua string
	//go:embed scripts/replay.lua
	replayLua string

	recordScript = redis.NewScript(recordLua)
	replayScript = redis.NewScript(replayLua)
)

// maxAttemptsKept bounds a record: about 100 attempts.
const maxAttemptsKept = 100

// store keeps delivery records and endpoint marks in Redis.
type store struct {
	rdb       redis.UniversalClient
	keys      keyspace.Space
	now       func() time.Time
	retention time.Duration
}

// write is one record write.
type write struct {
	shard                                  keyspace.Shard
	sessionID, eventID, endpointID, cursor string
	status, eventType, err                 string
	attempt                                *Attempt
	ack                                    string // outbox entry to acknowledge; "" for none
	test                                   bool   // a test event's: its session does not exist
}

// args are write's record.lua keys and arguments.
func (s *store) args(w *write, now time.Time) (keys []string, argv []any, err error) {
	var js []byte
	if w.attempt != nil {
		a := w.attempt
		st := storedAttempt{N: a.Attempt, At: a.At.UnixMilli(), Code: a.StatusCode, LatencyMS: a.LatencyMS, Error: a.Error}
		if w.status != StatusSucceeded {
			st.Body, st.Truncated = a.ResponseBody, a.ResponseTruncated
		}
		if js, err = json.Marshal(st); err != nil {
			return nil, nil, fmt.Errorf("record attempt: %w", err)
		}
	}
	keys = []string{s.keys.Deliveries(w.shard, w.sessionID), s.keys.Session(w.shard, w.sessionID), s.keys.Outbox(w.shard)}
	argv = []any{recordField(w.eventID, w.endpointID), w.status, w.eventType, w.cursor, now.UnixMilli(),
		w.err, js, s.retention.Milliseconds(), maxAttemptsKept, w.ack, relayGroup, flag(w.test)}
	return keys, argv, nil
}

// flag is a boolean script argument.
func flag(b bool) string {
	if b {
		return "1"
	}
	return ""
}

// pipeline runs fn's commands in one round trip (one per node on a
// cluster). Scripts go as EVALSHA; if Redis lost them (a restart), they are
// loaded and the pipeline runs again, which the scripts allow.
func (s *store) pipeline(ctx context.Context, fn func(redis.Pipeliner)) ([]redis.Cmder, error) {
	for try := 0; ; try++ {
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { fn(p); return nil })
		if err == nil || try > 0 || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return cmds, err
		}
		for _, sc := range []*redis.Script{recordScript, replayScript, requeueScript} {
			if err := sc.Load(ctx, s.rdb).Err(); err != nil {
				return nil, err
			}
		}
	}
}

// record writes one record (not group-committed: the retry handler's and
// the API's writes).
func (s *store) record(ctx context.Context, w *write) error {
	keys, argv, err := s.args(w, s.now())
	if err != nil {
		return err
	}
	if err := recordScript.Run(ctx, s.rdb, keys, argv...).Err(); err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// replay numbers a new replay of a delivery and marks it pending. n is 0
// when the record or its session is gone.
func (s *store) replay(ctx context.Context, sh keyspace.Shard, sessionID, eventID, endpointID string) (n int64, previous string, attempts int, err error) {
	// A test event's session does not exist: its record stands alone.
	guard := s.keys.Session(sh, sessionID)
	if lifecycle.IsTestEvent(eventID) {
		guard = s.keys.Deliveries(sh, sessionID)
	}
	res, err := replayScript.Run(ctx, s.rdb,
		[]string{s.keys.Deliveries(sh, sessionID), guard},
		recordField(eventID, endpointID), s.now().UnixMilli()).Slice()
	if err != nil || len(res) != 3 {
		return 0, "", 0, fmt.Errorf("replay delivery: %w", errors.Join(err, errors.New("unexpected script answer")))
	}
	n, _ = res[0].(int64)
	previous, _ = res[1].(string)
	a, _ := res[2].(int64)
	return n, previous, int(a), nil
}

// parseRecord decodes one field of a deliveries hash.
func parseRecord(sessionID, field, value string) (Delivery, summary, error) {
	eventID, endpointID, ok := strings.Cut(field, idSep)
	if !ok {
		return Delivery{}, summary{}, fmt.Errorf("delivery record field %q", field)
	}
	lines := strings.Split(value, "\n")
	var sum summary
	if err := json.Unmarshal([]byte(lines[0]), &sum); err != nil {
		return Delivery{}, summary{}, fmt.Errorf("delivery record %s: %w", field, err)
	}
	d := Delivery{
		ID:         deliveryID(sessionID, eventID, endpointID),
		EventID:    eventID,
		EventType:  sum.Type,
		SessionID:  sessionID,
		EndpointID: endpointID,
		Status:     sum.Status,
		Error:      sum.Error,
		CreatedAt:  lifecycle.At(time.UnixMilli(sum.CreatedAt)),
		UpdatedAt:  lifecycle.At(time.UnixMilli(sum.UpdatedAt)),
		Attempts:   make([]Attempt, 0, len(lines)-1),
	}
	for _, line := range lines[1:] {
		var a storedAttempt
		if json.Unmarshal([]byte(line), &a) != nil {
			continue
		}
		d.Attempts = append(d.Attempts, Attempt{
			Attempt: a.N, At: lifecycle.At(time.UnixMilli(a.At)), StatusCode: a.Code, LatencyMS: a.LatencyMS,
			Error: a.Error, ResponseBody: a.Body, ResponseTruncated: a.Truncated,
		})
	}
	return d, sum, nil
}

// lastAttempt is the highest attempt number of d.
func (d *Delivery) lastAttempt() int {
	last := 0
	for _, a := range d.Attempts {
		last = max(last, a.Attempt)
	}
	return last
}

// list returns a session's deliveries, oldest first.
func (s *store) list(ctx context.Context, sh keyspace.Shard, sessionID string) ([]Delivery, map[string]summary, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.Deliveries(sh, sessionID)).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("list deliveries: %w", err)
	}
	out := make([]Delivery, 0, len(m))
	sums := make(map[string]summary, len(m))
	for f, v := range m {
		d, sum, err := parseRecord(sessionID, f, v)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, d)
		sums[d.ID] = sum
	}
	slices.SortFunc(out, func(a, b Delivery) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt.Time), cmp.Compare(a.ID, b.ID))
	})
	return out, sums, nil
}

// get returns one delivery and its summary; ok is false when there is none.
func (s *store) get(ctx context.Context, sh keyspace.Shard, sessionID, eventID, endpointID string) (Delivery, summary, bool, error) {
	v, err := s.rdb.HGet(ctx, s.keys.Deliveries(sh, sessionID), recordField(eventID, endpointID)).Result()
	if errors.Is(err, redis.Nil) {
		return Delivery{}, summary{}, false, nil
	}
	if err != nil {
		return Delivery{}, summary{}, false, fmt.Errorf("read delivery: %w", err)
	}
	d, sum, err := parseRecord(sessionID, recordField(eventID, endpointID), v)
	return d, sum, err == nil, err
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
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.keys.EndpointsDisabled(), ep.id, js)
		p.Incr(ctx, s.keys.EndpointsVersion()) // every replica reloads
		return nil
	})
	if err != nil {
		return fmt.Errorf("disable endpoint: %w", err)
	}
	return nil
}

// enable removes an endpoint's disabled mark.
func (s *store) enable(ctx context.Context, id string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, s.keys.EndpointsDisabled(), id)
		p.Incr(ctx, s.keys.EndpointsVersion())
		return nil
	})
	if err != nil {
		return fmt.Errorf("enable endpoint: %w", err)
	}
	return nil
}

// marks returns the disabled marks by endpoint id.
func (s *store) marks(ctx context.Context) (map[string]disabledMark, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.EndpointsDisabled()).Result()
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

// parseCursor parses an outbox entry id, "ms-seq".
func parseCursor(s string) (string, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return "", false
	}
	if _, err := strconv.ParseUint(a, 10, 64); err != nil {
		return "", false
	}
	if _, err := strconv.ParseUint(b, 10, 64); err != nil {
		return "", false
	}
	return s, true
}
