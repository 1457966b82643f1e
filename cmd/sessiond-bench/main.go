package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errDrillFailed):
		os.Exit(1) // the report says why
	default:
		fmt.Fprintf(os.Stderr, "sessiond-bench: %v\n", err)
		os.Exit(1)
	}
}

// errDrillFailed is returned when the drill found a failure; the report
// says which.
var errDrillFailed = errors.New("drill failed")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) > 0 && args[0] == "drill" {
		cfg, err := parseDrillFlags(args[1:], stderr)
		if err != nil {
			return err
		}
		rep, err := runDrill(ctx, cfg, stderr)
		if err != nil {
			return err
		}
		if cfg.JSON {
			err = writeJSON(stdout, rep)
		} else {
			rep.writeTable(stdout)
		}
		if err != nil {
			return err
		}
		if rep.Failed {
			return errDrillFailed
		}
		return nil
	}
	if len(args) > 0 && args[0] == "bench" {
		args = args[1:]
	}
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	return runBench(ctx, cfg, stdout, stderr)
}
