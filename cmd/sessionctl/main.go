package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sessiond/sessiond/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // an error answer or no answer
	exitUsage = 2 // bad arguments or missing credentials; nothing was sent
)

// run runs one sessionctl command line (without the program name) and
// returns its exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	x := &invocation{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) > 0 && args[0] == "help" {
		args = append(args[1:len(args):len(args)], "--help")
	}
	cmd, path := commands(), "sessionctl"
	rest := args
	for len(cmd.subs) > 0 {
		if len(rest) == 0 {
			return x.usageError(cmd, path, "missing command")
		}
		if isHelp(rest[0]) {
			writeUsage(stdout, cmd, path)
			return exitOK
		}
		sub := cmd.sub(rest[0])
		if sub == nil {
			return x.usageError(cmd, path, fmt.Sprintf("unknown command %q", rest[0]))
		}
		cmd, path, rest = sub, path+" "+rest[0], rest[1:]
	}

	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	act := cmd.setup(fs)
	pos, err := parseInterspersed(fs, rest)
	switch {
	case errors.Is(err, flag.ErrHelp):
		writeUsage(stdout, cmd, path)
		return exitOK
	case err != nil:
		return x.usageError(cmd, path, err.Error())
	case len(pos) < cmd.minArgs || len(pos) > cmd.maxArgs:
		return x.usageError(cmd, path, wrongArgs(cmd, len(pos)))
	}

	err = act(ctx, x, pos)
	var ue usageError
	var ce configError
	var ae *client.Error
	switch {
	case err == nil:
		x.printAnswer()
		return exitOK
	case errors.As(err, &ue):
		return x.usageError(cmd, path, ue.Error())
	case errors.As(err, &ce):
		fmt.Fprintln(stderr, "sessionctl: "+ce.Error())
		return exitUsage
	case errors.As(err, &ae):
		x.printAnswer() // the daemon's error body, as received
	}
	fmt.Fprintln(stderr, "sessionctl: "+strings.ReplaceAll(err.Error(), "\n", " "))
	return exitError
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

func wrongArgs(cmd *command, n int) string {
	switch {
	case cmd.maxArgs == 0:
		return fmt.Sprintf("takes no arguments, got %d", n)
	case cmd.minArgs == cmd.maxArgs:
		return fmt.Sprintf("wants %d argument%s, got %d", cmd.minArgs, plural(cmd.minArgs), n)
	default:
		return fmt.Sprintf("wants %d to %d arguments, got %d", cmd.minArgs, cmd.maxArgs, n)
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// parseInterspersed parses flags wherever they are among the positional
// arguments ("get ID --flag" as well as "get --flag ID"), up to a "--".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
