package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/sessiond/sessiond/client"
)

// command is a node of the command tree: a group of subs, or a leaf that
// setup gives flags and an action.
type command struct {
	name    string
	args    string // the synopsis after the name, e.g. "ID STATUS [flags]"
	summary string
	long    string // the leaf's usage text when summary is too short for it
	// minArgs and maxArgs bound a leaf's positional arguments.
	minArgs, maxArgs int
	subs             []*command
	// setup defines the leaf's flags on fs and returns its action, which
	// reads them once fs has parsed the command line.
	setup func(fs *flag.FlagSet) action
}

// action runs a leaf with its positional arguments. It leaves the answer to
// print in x.answer (through x.capture); run prints it.
type action func(ctx context.Context, x *invocation, args []string) error

func (c *command) sub(name string) *command {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// usageError is a bad command line: exit 2 with the command's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// configError is a missing or bad setting in the environment: exit 2.
type configError struct{ msg string }

func (e configError) Error() string { return e.msg }

// invocation is one run's world: environment, streams and the answer.
type invocation struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
	stdinUsed      bool
	answer         client.Response // the answer to print
}

// The environment sessionctl reads (DESIGN.md, "sessionctl").
const (
	envURL      = "SESSIOND_URL"
	envKey      = "SESSIOND_API_KEY"
	envSecret   = "SESSIOND_API_SECRET"
	defaultURL  = "http://127.0.0.1:8080"
	maxInputLen = 16 << 20
)

// client returns the admin API client of the environment's settings. Of a
// comma-separated SESSIOND_API_SECRET (the daemon's rotation form), the
// first secret signs.
func (x *invocation) client() (*client.Client, error) {
	base := x.getenv(envURL)
	if base == "" {
		base = defaultURL
	}
	key := strings.TrimSpace(x.getenv(envKey))
	secret, _, _ := strings.Cut(x.getenv(envSecret), ",")
	secret = strings.TrimSpace(secret)
	switch {
	case key == "" && secret == "":
		return nil, configError{envKey + " and " + envSecret + " are not set: sessionctl needs the admin API's key and secret"}
	case key == "":
		return nil, configError{envKey + " is not set: sessionctl needs the admin API's key"}
	case secret == "":
		return nil, configError{envSecret + " is not set: sessionctl needs the admin API's secret"}
	}
	c, err := client.New(base, key, secret)
	if err != nil {
		return nil, configError{envURL + " " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	return c, nil
}

// capture makes a call store its answer for run to print.
func (x *invocation) capture() client.CallOption { return client.CaptureResponse(&x.answer) }

// printAnswer writes the captured answer's body to stdout, indented when
// stdout is a terminal, with a final newline.
func (x *invocation) printAnswer() {
	b := x.answer.Body
	if len(b) == 0 {
		return
	}
	if isTerminal(x.stdout) {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") == nil {
			b = buf.Bytes()
		}
	}
	if b[len(b)-1] != '\n' {
		b = append(b[:len(b):len(b)], '\n')
	}
	x.stdout.Write(b)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// input reads an argument that may be given as itself, as "@path" (the
// file's content) or as "-" (all of stdin, once per command).
func (x *invocation) input(name, v string) ([]byte, error) {
	switch {
	case v == "-":
		if x.stdinUsed {
			return nil, usagef("%s: stdin is already used by another argument", name)
		}
		x.stdinUsed = true
		b, err := io.ReadAll(io.LimitReader(x.stdin, maxInputLen+1))
		if err != nil {
			return nil, usagef("%s: read stdin: %v", name, err)
		}
		if len(b) > maxInputLen {
			return nil, usagef("%s: stdin is over 16 MiB", name)
		}
		return b, nil
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if err != nil {
			return nil, usagef("%s: %v", name, err)
		}
		return b, nil
	}
	return []byte(v), nil
}

// jsonInput reads a JSON value argument (see input); "" gives nil.
func (x *invocation) jsonInput(name, v string) (json.RawMessage, error) {
	if v == "" {
		return nil, nil
	}
	b, err := x.input(name, v)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, usagef("%s is not valid JSON", name) // not quoted: it may be personal data
	}
	return b, nil
}

// usageError reports a bad command line on stderr with cmd's usage.
func (x *invocation) usageError(cmd *command, path, msg string) int {
	fmt.Fprintf(x.stderr, "%s: %s\n\n", path, msg)
	writeUsage(x.stderr, cmd, path)
	return exitUsage
}

// writeUsage writes cmd's usage: its synopsis, summary, and its commands
// or flags.
func writeUsage(w io.Writer, cmd *command, path string) {
	if len(cmd.subs) > 0 {
		fmt.Fprintf(w, "Usage: %s <command> [arguments] [flags]\n\n%s\n\nCommands:\n", path, cmd.summary)
		width := 0
		for _, s := range cmd.subs {
			width = max(width, len(s.name))
		}
		for _, s := range cmd.subs {
			fmt.Fprintf(w, "  %-*s  %s\n", width, s.name, s.summary)
		}
		fmt.Fprintf(w, "\nRun \"%s <command> --help\" for a command's usage.\n", path)
		if path == "sessionctl" {
			fmt.Fprintf(w, "\nEnvironment:\n"+
				"  %-20s the admin API (default %s)\n"+
				"  %-20s the API key (required)\n"+
				"  %-20s the API secret (required; of a comma-separated list, the first)\n",
				envURL, defaultURL, envKey, envSecret)
		}
		return
	}
	synopsis := path
	if cmd.args != "" {
		synopsis += " " + cmd.args
	}
	text := cmd.long
	if text == "" {
		text = cmd.summary
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", synopsis, text)
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	cmd.setup(fs)
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) == 0 {
		return
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	fmt.Fprintf(w, "\nFlags:\n")
	for _, f := range flags {
		name, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		if name != "" {
			name = " " + name
		}
		fmt.Fprintf(w, "  %s%s%s\n      %s", dash, f.Name, name, usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// setFlags returns the names of the flags the command line set.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// listFlag is a repeatable flag of comma-separated values.
type listFlag struct {
	v   []string
	set bool
}

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.v, ",")
}

func (l *listFlag) Set(s string) error {
	if !l.set {
		l.set, l.v = true, []string{}
	}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			l.v = append(l.v, p)
		}
	}
	return nil
}

// pairFlag is a repeatable NAME<sep>VALUE flag; an empty value sets it to
// no pairs.
type pairFlag struct {
	sep string
	m   map[string]string
	set bool
}

func (p *pairFlag) String() string {
	if p == nil {
		return ""
	}
	var s []string
	for k, v := range p.m {
		s = append(s, k+p.sep+v)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func (p *pairFlag) Set(s string) error {
	if !p.set {
		p.set, p.m = true, map[string]string{}
	}
	if s == "" {
		return nil
	}
	k, v, ok := strings.Cut(s, p.sep)
	if k = strings.TrimSpace(k); !ok || k == "" {
		return fmt.Errorf("want NAME%sVALUE", p.sep)
	}
	p.m[k] = strings.TrimSpace(v)
	return nil
}
