package lifecycle

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// The events feed merges the shards' outbox streams in the order of their
// entry ids (Redis's commit time, then the order within a millisecond).
// Its cursor is opaque: the position reached in every shard's stream.

// FeedEvent is an event as the events feed lists it.
type FeedEvent struct {
	ID        string    `json:"id"`
	Cursor    string    `json:"cursor"`
	Type      string    `json:"type"`
	Timestamp Time      `json:"timestamp"`
	Data      EventData `json:"data"`
}

// Feed is one page of the events feed.
type Feed struct {
	Events     []FeedEvent `json:"events"`
	NextCursor string      `json:"next_cursor"`
}

// streamID is an outbox entry id, "ms-seq".
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return streamID{ms, seq}, ok && err1 == nil && err2 == nil
}

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id streamID) compare(o streamID) int {
	return cmp.Or(cmp.Compare(id.ms, o.ms), cmp.Compare(id.seq, o.seq))
}

// feedPosition is a cursor: in each shard, the last entry read (zero: none).
type feedPosition [keyspace.Shards]streamID

// encode is the opaque form: the shards' positions as unsigned varints,
// base64url.
func (p *feedPosition) encode() string {
	b := make([]byte, 0, keyspace.Shards*8)
	for _, id := range p {
		b = binary.AppendUvarint(b, id.ms)
		b = binary.AppendUvarint(b, id.seq)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeFeedPosition parses a cursor; "" is the start of the feed.
func decodeFeedPosition(s string) (feedPosition, error) {
	var p feedPosition
	if s == "" {
		return p, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(s) > 4*keyspace.Shards*20 {
		return p, invalid("cursor", "must be a next_cursor from a previous page")
	}
	for i := range p {
		ms, n := binary.Uvarint(b)
		if n <= 0 {
			return p, invalid("cursor", "must be a next_cursor from a previous page")
		}
		b = b[n:]
		seq, n := binary.Uvarint(b)
		if n <= 0 {
			return p, invalid("cursor", "must be a next_cursor from a previous page")
		}
		b = b[n:]
		p[i] = streamID{ms, seq}
	}
	if len(b) != 0 {
		return p, invalid("cursor", "must be a next_cursor from a previous page")
	}
	return p, nil
}

// Events lists up to limit events (100 when limit <= 0) after the cursor
// (exclusive; "" starts from the oldest kept), oldest first. NextCursor is
// where the next call continues; it equals after when there is nothing
// new. A purged session's events are reduced to their type, session id,
// status, sequence and time.
func (s *Service) Events(ctx context.Context, after string, limit int) (*Feed, error) {
	if limit <= 0 {
		limit = 100
	}
	pos, err := decodeFeedPosition(after)
	if err != nil {
		return nil, err
	}
	// Every shard's next limit entries: the page is the first limit of
	// their union.
	p := s.rdb.Pipeline()
	reads := make([]*redis.XMessageSliceCmd, keyspace.Shards)
	for i := range reads {
		start := "-"
		if pos[i] != (streamID{}) {
			start = "(" + pos[i].String()
		}
		reads[i] = p.XRangeN(ctx, s.keys.Outbox(keyspace.Shard(i)), start, "+", int64(limit))
	}
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	type entry struct {
		sh keyspace.Shard
		id streamID
		m  redis.XMessage
	}
	var all []entry
	for i, r := range reads {
		for _, m := range r.Val() {
			id, ok := parseStreamID(m.ID)
			if !ok {
				return nil, fmt.Errorf("read events: bad entry id %q", m.ID)
			}
			all = append(all, entry{keyspace.Shard(i), id, m})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Or(a.id.compare(b.id), cmp.Compare(a.sh, b.sh)) })
	all = all[:min(len(all), limit)]

	feed := &Feed{Events: make([]FeedEvent, 0, len(all)), NextCursor: after}
	events := make([]*Event, 0, len(all))
	for _, e := range all {
		pos[e.sh] = e.id
		ev, err := ParseEvent(e.sh, e.m)
		if err != nil {
			return nil, err
		}
		if ev.Type == EventPurged {
			continue // an instruction to the dispatcher, not an event
		}
		ev.Cursor = pos.encode()
		events = append(events, ev)
	}
	feed.NextCursor = pos.encode()
	if len(all) == 0 {
		feed.NextCursor = after
	}
	data, _, err := s.EventDetails(ctx, events)
	if err != nil {
		return nil, err
	}
	for i, ev := range events {
		feed.Events = append(feed.Events, FeedEvent{ID: ev.ID, Cursor: ev.Cursor, Type: ev.Type, Timestamp: ev.Timestamp, Data: data[i]})
	}
	return feed, nil
}

// EventDetails reads what the webhook bodies of events need beside their
// outbox entries, in one round trip, and returns each event's data; full
// is false for an event whose session has been purged.
func (s *Service) EventDetails(ctx context.Context, events []*Event) (data []EventData, full []bool, err error) {
	if len(events) == 0 {
		return nil, nil, nil
	}
	p := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(events))
	for i, ev := range events {
		cmds[i] = p.HMGet(ctx, s.keys.EventDetails(ev.Shard, ev.SessionID), detailsConstant, ev.ID)
	}
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		return nil, nil, fmt.Errorf("read event details: %w", err)
	}
	data, full = make([]EventData, len(events)), make([]bool, len(events))
	for i, ev := range events {
		vals := cmds[i].Val()
		var constant, own string
		if len(vals) == 2 {
			constant, _ = vals[0].(string)
			own, _ = vals[1].(string)
		}
		if data[i], full[i], err = ev.Data(constant, own); err != nil {
			return nil, nil, err
		}
	}
	return data, full, nil
}
