package main

import (
	"context"
	"flag"

	"github.com/sessiond/sessiond/client"
)

func sessionsCreate(fs *flag.FlagSet) action {
	refID := fs.String("ref-id", "", "your reference of the user (required)")
	flowID := fs.String("flow-id", "", "the verification flow")
	person := fs.String("person", "", "personal data, a JSON object: literal, @file or - (stdin), which keep it out of the process list")
	metadata := fs.String("metadata", "", "your metadata, a JSON object: literal, @file or - (stdin)")
	force := fs.Bool("force", false, "cancel the ref_id's active session and create a new one")
	idem := fs.String("idempotency-key", "", "an exact retry with the same `key` gets the first answer")
	return func(ctx context.Context, x *invocation, _ []string) error {
		if *refID == "" {
			return usagef("--ref-id is required")
		}
		r := client.CreateSessionRequest{RefID: *refID, FlowID: *flowID, ForceCreation: *force}
		var err error
		if r.Person, err = x.jsonInput("--person", *person); err != nil {
			return err
		}
		if r.Metadata, err = x.jsonInput("--metadata", *metadata); err != nil {
			return err
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		opts := []client.CallOption{x.capture()}
		if *idem != "" {
			opts = append(opts, client.WithIdempotencyKey(*idem))
		}
		_, err = c.CreateSession(ctx, r, opts...)
		return err
	}
}

func sessionsList(fs *flag.FlagSet) action {
	var o client.ListSessionsOptions
	fs.StringVar(&o.RefID, "ref-id", "", "only the sessions of this ref_id")
	fs.StringVar(&o.Status, "status", "", "only the sessions in this status")
	fs.IntVar(&o.Limit, "limit", 0, "page size (the daemon's default when not given)")
	fs.StringVar(&o.Cursor, "cursor", "", "the next_cursor of the previous page")
	return func(ctx context.Context, x *invocation, _ []string) error {
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.ListSessions(ctx, o, x.capture())
		return err
	}
}

func sessionsUpdate(fs *flag.FlagSet) action {
	metadata := fs.String("metadata", "", "the new metadata, a JSON object: literal, @file or - (stdin)")
	var tags listFlag
	fs.Var(&tags, "tags", "the new `tags`, comma-separated (repeatable; --tags= clears them)")
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" {
			return usagef("ID is empty")
		}
		var r client.UpdateSessionRequest
		var err error
		if r.Metadata, err = x.jsonInput("--metadata", *metadata); err != nil {
			return err
		}
		if tags.set {
			r.Tags = &tags.v
		}
		if r.Metadata == nil && r.Tags == nil {
			return usagef("nothing to update: give --metadata and/or --tags")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.UpdateSession(ctx, args[0], r, x.capture())
		return err
	}
}

func sessionsStatus(*flag.FlagSet) action {
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" || args[1] == "" {
			return usagef("ID and STATUS must not be empty")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.SetStatus(ctx, args[0], args[1], x.capture())
		return err
	}
}

func sessionsDecide(fs *flag.FlagSet) action {
	reason := fs.String("reason", "", "why, for the integrator (removed by redaction)")
	reasonCode := fs.Int("reason-code", 0, "your numeric reason code")
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" || args[1] == "" {
			return usagef("ID and STATUS must not be empty")
		}
		r := client.DecideRequest{Status: args[1], Reason: *reason}
		if setFlags(fs)["reason-code"] {
			r.ReasonCode = reasonCode
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.Decide(ctx, args[0], r, x.capture())
		return err
	}
}
