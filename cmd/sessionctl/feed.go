package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"strings"

	"github.com/sessiond/sessiond/client"
)

func events(fs *flag.FlagSet) action {
	after := fs.String("after", "", "start after this `cursor` (a next_cursor or an event's cursor)")
	limit := fs.Int("limit", 0, "page size (the daemon's default when not given)")
	follow := fs.Bool("follow", false, "print one event per line as they come, until interrupted")
	return func(ctx context.Context, x *invocation, _ []string) error {
		c, err := x.client()
		if err != nil {
			return err
		}
		if !*follow {
			_, err := c.Events(ctx, *after, *limit, x.capture())
			return err
		}
		var line bytes.Buffer
		err = c.FollowEvents(ctx, client.FollowOptions{After: *after, Limit: *limit}, func(e client.Event) error {
			line.Reset()
			if err := json.Compact(&line, e.Raw); err != nil {
				return err
			}
			line.WriteByte('\n')
			_, err := x.stdout.Write(line.Bytes())
			return err
		}, x.capture())
		if ctx.Err() != nil {
			x.answer = client.Response{} // interrupted: the events are printed, the last page is not
			return nil
		}
		return err
	}
}

func tokensIntrospect(*flag.FlagSet) action {
	return func(ctx context.Context, x *invocation, args []string) error {
		token := args[0]
		if token == "-" {
			b, err := x.input("TOKEN", "-")
			if err != nil {
				return err
			}
			token = strings.TrimSpace(string(b))
		}
		if token == "" {
			return usagef("TOKEN is empty")
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		_, err = c.Introspect(ctx, token, x.capture())
		return err
	}
}
