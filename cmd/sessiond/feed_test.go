package main

import (
	"context"
	"testing"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// feedEvents reads the whole events feed (every shard's outbox, merged).
func feedEvents(t *testing.T, svc *lifecycle.Service) []lifecycle.FeedEvent {
	t.Helper()
	var out []lifecycle.FeedEvent
	cursor := ""
	for {
		page, err := svc.Events(context.Background(), cursor, 1000)
		if err != nil {
			t.Fatalf("read the events feed: %v", err)
		}
		out = append(out, page.Events...)
		if len(page.Events) == 0 {
			return out
		}
		cursor = page.NextCursor
	}
}

// webhookBody is the body the webhook of a feed event carries.
func webhookBody(t *testing.T, fe lifecycle.FeedEvent) []byte {
	t.Helper()
	b, err := (&lifecycle.Event{Type: fe.Type, Timestamp: fe.Timestamp}).WebhookBody(fe.Data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// webhookQueues are the daemon's Asynq queues of webhook retries.
var webhookQueues = keyspace.New("").WebhookQueues()
