package main

import (
	"context"
	"flag"

	"github.com/sessiond/sessiond/client"
)

// commands is the whole command tree, one line per /v1 route (DESIGN.md,
// "Admin HTTP contract").
func commands() *command {
	return &command{name: "sessionctl", summary: "sessionctl calls sessiond's admin API and prints its JSON answers.", subs: []*command{
		{name: "sessions", summary: "Create, read, progress, decide and erase verification sessions", subs: []*command{
			{name: "create", args: "--ref-id REF [flags]", summary: "Create a session, or get the ref_id's active one with a fresh token (POST /v1/sessions).", setup: sessionsCreate},
			{name: "get", args: "ID", summary: "Read a session (GET /v1/sessions/{id}).", minArgs: 1, maxArgs: 1, setup: byID(getSession)},
			{name: "list", args: "[flags]", summary: "List sessions, newest first (GET /v1/sessions).", setup: sessionsList},
			{name: "update", args: "ID [--metadata JSON] [--tags a,b]", summary: "Replace a session's metadata and/or tags (PATCH /v1/sessions/{id}).", minArgs: 1, maxArgs: 1, setup: sessionsUpdate},
			{name: "status", args: "ID started|submitted|review", summary: "Report the user's progress (POST /v1/sessions/{id}/status).", minArgs: 2, maxArgs: 2, setup: sessionsStatus},
			{name: "decide", args: "ID approved|declined|resubmission_requested [--reason R] [--reason-code N]", summary: "Record the verification decision (POST /v1/sessions/{id}/decision).", minArgs: 2, maxArgs: 2, setup: sessionsDecide},
			{name: "cancel", args: "ID", summary: "Cancel an active session (POST /v1/sessions/{id}/cancel).", minArgs: 1, maxArgs: 1, setup: byID(cancelSession)},
			{name: "expire", args: "ID", summary: "Force a session's expiry now (POST /v1/sessions/{id}/expire).", minArgs: 1, maxArgs: 1, setup: byID(expireSession)},
			{name: "resume", args: "ID", summary: "Bring an expired or abandoned session back with a new token (POST /v1/sessions/{id}/resume).", minArgs: 1, maxArgs: 1, setup: byID(resumeSession)},
			{name: "delete", args: "ID", summary: "Delete a session; deletes are rate limited (DELETE /v1/sessions/{id}).", minArgs: 1, maxArgs: 1, setup: byID(deleteSession)},
			{name: "redact", args: "ID", summary: "Remove a session's personal data for good (POST /v1/sessions/{id}/redact).", minArgs: 1, maxArgs: 1, setup: byID(redactSession)},
			{name: "deliveries", args: "ID", summary: "List a session's webhook deliveries with their attempts (GET /v1/sessions/{id}/deliveries).", minArgs: 1, maxArgs: 1, setup: byID(listDeliveries)},
		}},
		{name: "deliveries", summary: "Webhook deliveries", subs: []*command{
			{name: "replay", args: "ID", summary: "Send a delivery again, also a dead one (POST /v1/deliveries/{id}/replay).", minArgs: 1, maxArgs: 1, setup: byID(replayDelivery)},
		}},
		{name: "events", args: "[--after CURSOR] [--limit N] [--follow]", summary: "Read or follow the events feed", long: "Read the events feed, oldest first (GET /v1/events). With --follow, print one event per line as they come, until interrupted.", setup: events},
		{name: "tokens", summary: "Session tokens", subs: []*command{
			{name: "introspect", args: "TOKEN|-", summary: "Tell whether a session token is active, and whose it is (POST /v1/tokens/introspect). With -, the token is read from stdin.", minArgs: 1, maxArgs: 1, setup: tokensIntrospect},
		}},
		{name: "endpoints", summary: "Webhook endpoints", subs: []*command{
			{name: "list", summary: "List the webhook endpoints (GET /v1/endpoints).", setup: endpointsList},
			{name: "get", args: "ID", summary: "Read an endpoint (GET /v1/endpoints/{id}).", minArgs: 1, maxArgs: 1, setup: byID(getEndpoint)},
			{name: "create", args: "--url URL [flags]", summary: "Add an endpoint; the answer shows its secret, once (POST /v1/endpoints).", setup: endpointsCreate},
			{name: "update", args: "ID [flags]", summary: "Change an endpoint; flags not given are left as they are (PATCH /v1/endpoints/{id}).", minArgs: 1, maxArgs: 1, setup: endpointsUpdate},
			{name: "delete", args: "ID", summary: "Delete an endpoint; deliveries pending to it are dropped (DELETE /v1/endpoints/{id}).", minArgs: 1, maxArgs: 1, setup: byID(deleteEndpoint)},
			{name: "rotate-secret", args: "ID [--overlap 24h]", summary: "Give an endpoint a new secret; the old one keeps signing during the overlap (POST /v1/endpoints/{id}/rotate-secret).", minArgs: 1, maxArgs: 1, setup: endpointsRotate},
			{name: "test", args: "ID [--type session.approved]", summary: "Send a signed example event to an endpoint (POST /v1/endpoints/{id}/test).", minArgs: 1, maxArgs: 1, setup: endpointsTest},
			{name: "recover", args: "ID --since RFC3339 [--until RFC3339]", summary: "Re-send the events of a window that an endpoint did not get (POST /v1/endpoints/{id}/recover).", minArgs: 1, maxArgs: 1, setup: endpointsRecover},
		}},
		{name: "recoveries", summary: "Endpoint recoveries", subs: []*command{
			{name: "get", args: "ID", summary: "Read a recovery's progress (GET /v1/recoveries/{id}).", minArgs: 1, maxArgs: 1, setup: byID(getRecovery)},
		}},
		{name: "api", args: "METHOD PATH [BODY|@file|-] [-H 'Name: value']...", summary: "Sign and send any request, like gh api", long: "Sign and send any request and print the answer's body, like gh api. PATH carries its query, e.g. '/v1/sessions?status=review'; BODY is literal, @file for a file's content, or - for stdin. A GET, or a request with an Idempotency-Key header, is retried like the other commands' GETs.", minArgs: 2, maxArgs: 3, setup: api},
	}}
}

// byID makes the setup of a leaf that takes one ID and no flags.
func byID(call func(ctx context.Context, c *client.Client, id string, o client.CallOption) error) func(*flag.FlagSet) action {
	return func(*flag.FlagSet) action {
		return func(ctx context.Context, x *invocation, args []string) error {
			if args[0] == "" {
				return usagef("ID is empty")
			}
			c, err := x.client()
			if err != nil {
				return err
			}
			return call(ctx, c, args[0], x.capture())
		}
	}
}

// The calls of the leaves that take one ID and no flags.

func getSession(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.GetSession(ctx, id, o)
	return err
}

func cancelSession(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.CancelSession(ctx, id, o)
	return err
}

func expireSession(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.ExpireSession(ctx, id, o)
	return err
}

func resumeSession(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.ResumeSession(ctx, id, o)
	return err
}

func deleteSession(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	return c.DeleteSession(ctx, id, o)
}

func redactSession(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.RedactSession(ctx, id, o)
	return err
}

func listDeliveries(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.ListDeliveries(ctx, id, o)
	return err
}

func replayDelivery(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.ReplayDelivery(ctx, id, o)
	return err
}

func getEndpoint(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.GetEndpoint(ctx, id, o)
	return err
}

func deleteEndpoint(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	return c.DeleteEndpoint(ctx, id, o)
}

func getRecovery(ctx context.Context, c *client.Client, id string, o client.CallOption) error {
	_, err := c.GetRecovery(ctx, id, o)
	return err
}
