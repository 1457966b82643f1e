// Command sessiond is the verification-session daemon: it serves the admin
// API, runs timed work and delivers webhooks. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sessiond: %v\n", err)
		os.Exit(1)
	}
}
