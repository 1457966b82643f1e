package main

import (
	"context"
	"flag"
	"strings"

	"github.com/sessiond/sessiond/client"
)

// api is "sessionctl api METHOD PATH [BODY]": any request, signed.
func api(fs *flag.FlagSet) action {
	headers := pairFlag{sep: ":"}
	fs.Var(&headers, "H", "a request header, `'Name: value'` (repeatable); Idempotency-Key makes a POST safe to retry")
	fs.Var(&headers, "header", "the same as -H")
	return func(ctx context.Context, x *invocation, args []string) error {
		method, path := strings.ToUpper(args[0]), args[1]
		if method == "" {
			return usagef("METHOD is empty")
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		var body []byte
		if len(args) == 3 {
			b, err := x.input("BODY", args[2])
			if err != nil {
				return err
			}
			body = b
		}
		c, err := x.client()
		if err != nil {
			return err
		}
		opts := []client.CallOption{x.capture()}
		for k, v := range headers.m {
			opts = append(opts, client.WithHeader(k, v))
		}
		_, err = c.Do(ctx, method, path, body, opts...)
		return err
	}
}
