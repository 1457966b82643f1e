package main

import (
	"context"
	"flag"
	"time"

	"github.com/sessiond/sessiond/client"
)

func endpointsList(*flag.FlagSet) action {
	return func(ctx context.Context, x *invocation, _ []string) error {
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.ListEndpoints(ctx, x.capture())
		return err
	}
}

// endpointFlags are the fields of an endpoint that create and update set.
type endpointFlags struct {
	url, description string
	events           listFlag
	headers          pairFlag
}

func (f *endpointFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", "", "the endpoint's `URL`")
	fs.Var(&f.events, "event", "an event `type` to send, e.g. session.approved (repeatable or comma-separated; none: every event)")
	fs.StringVar(&f.description, "description", "", "a description")
	f.headers.sep = "="
	fs.Var(&f.headers, "header", "a header to send with each webhook, `NAME=VALUE` (repeatable; --header= sets none)")
}

func endpointsCreate(fs *flag.FlagSet) action {
	var f endpointFlags
	f.define(fs)
	return func(ctx context.Context, x *invocation, _ []string) error {
		if f.url == "" {
			return usagef("--url is required")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		r := client.CreateEndpointRequest{URL: f.url, Events: f.events.v, Description: f.description, Headers: f.headers.m}
		_, err = c.CreateEndpoint(ctx, r, x.capture())
		return err
	}
}

func endpointsUpdate(fs *flag.FlagSet) action {
	var f endpointFlags
	f.define(fs)
	disabled := fs.Bool("disabled", false, "--disabled=true stops deliveries to it, --disabled=false resumes them")
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" {
			return usagef("ID is empty")
		}
		set := setFlags(fs)
		var r client.UpdateEndpointRequest
		if set["url"] {
			r.URL = &f.url
		}
		if set["description"] {
			r.Description = &f.description
		}
		if set["disabled"] {
			r.Disabled = disabled
		}
		if f.events.set {
			r.Events = &f.events.v
		}
		if f.headers.set {
			r.Headers = &f.headers.m
		}
		if len(set) == 0 {
			return usagef("nothing to update: give at least one of --url, --event, --description, --header, --disabled")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.UpdateEndpoint(ctx, args[0], r, x.capture())
		return err
	}
}

func endpointsRotate(fs *flag.FlagSet) action {
	overlap := fs.Duration("overlap", 0, "how long the old secret keeps signing beside the new one, e.g. 24h (the daemon's default when not given)")
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" {
			return usagef("ID is empty")
		}
		if *overlap < 0 {
			return usagef("--overlap must not be negative")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.RotateEndpointSecret(ctx, args[0], *overlap, x.capture())
		return err
	}
}

func endpointsTest(fs *flag.FlagSet) action {
	typ := fs.String("type", "", "the example event's `type`, e.g. session.approved (the daemon's default when not given)")
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" {
			return usagef("ID is empty")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.TestEndpoint(ctx, args[0], *typ, x.capture())
		return err
	}
}

func endpointsRecover(fs *flag.FlagSet) action {
	since := fs.String("since", "", "the window's start, RFC 3339 (required), e.g. 2026-01-02T00:00:00Z")
	until := fs.String("until", "", "the window's end, RFC 3339 (now when not given)")
	return func(ctx context.Context, x *invocation, args []string) error {
		if args[0] == "" {
			return usagef("ID is empty")
		}
		if *since == "" {
			return usagef("--since is required")
		}
		from, err := time.Parse(time.RFC3339, *since)
		if err != nil {
			return usagef("--since: want an RFC 3339 time such as 2026-01-02T00:00:00Z")
		}
		var to time.Time
		if *until != "" {
			if to, err = time.Parse(time.RFC3339, *until); err != nil {
				return usagef("--until: want an RFC 3339 time such as 2026-01-02T00:00:00Z")
			}
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.RecoverEndpoint(ctx, args[0], from, to, x.capture())
		return err
	}
}
