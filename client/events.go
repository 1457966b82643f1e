package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Event is one entry of the events feed.
type Event struct {
	ID        string          `json:"id"`     // the webhook-id of the event
	Cursor    string          `json:"cursor"` // opaque; the feed's position after this event
	Type      string          `json:"type"`   // e.g. session.approved
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"` // the session without person and metadata, plus its sequence
	// Raw is the event exactly as the feed sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes an event and keeps its text in Raw.
func (e *Event) UnmarshalJSON(b []byte) error {
	type plain Event // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = Event(p)
	e.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// EventPage is one page of the events feed, oldest first. NextCursor is the
// after of the next page; it equals the request's after when nothing is new.
type EventPage struct {
	Events     []Event `json:"events"`
	NextCursor string  `json:"next_cursor"`
}

// Events reads the feed after the cursor after ("" for its start); limit 0
// means the daemon's default.
func (c *Client) Events(ctx context.Context, after string, limit int, opts ...CallOption) (*EventPage, error) {
	q := url.Values{}
	set(q, "after", after)
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p EventPage
	if _, err := c.call(ctx, "list events", http.MethodGet, escape("events"), q, nil, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// FollowOptions configures FollowEvents; zero fields mean the defaults.
type FollowOptions struct {
	After string // start after this cursor; "" for the feed's start
	Limit int    // page size; 0 for the daemon's default
	// MinInterval is the wait after a poll that brought nothing new,
	// doubled after each further empty poll up to MaxInterval. Defaults 1s
	// and 15s. A poll that brought events is followed by the next at once.
	MinInterval, MaxInterval time.Duration
}

// FollowEvents tails the events feed: it calls fn with each event, in
// order, as they come, until ctx ends (it then returns ctx.Err()), fn
// returns an error (returned as is) or a page cannot be read after the
// client's retries (returned wrapped). opts apply to every page's request.
func (c *Client) FollowEvents(ctx context.Context, o FollowOptions, fn func(Event) error, opts ...CallOption) error {
	if o.MinInterval <= 0 {
		o.MinInterval = time.Second
	}
	if o.MaxInterval <= 0 {
		o.MaxInterval = 15 * time.Second
	}
	o.MaxInterval = max(o.MaxInterval, o.MinInterval)
	after, wait := o.After, o.MinInterval
	for {
		p, err := c.Events(ctx, after, o.Limit, opts...)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		for _, e := range p.Events {
			if err := fn(e); err != nil {
				return err
			}
		}
		next := p.NextCursor
		if next == "" && len(p.Events) > 0 {
			next = p.Events[len(p.Events)-1].Cursor
		}
		moved := next != "" && next != after
		if next != "" {
			after = next
		}
		if len(p.Events) > 0 && moved {
			wait = o.MinInterval
			continue
		}
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, o.MaxInterval)
	}
}
