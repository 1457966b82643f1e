package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client/clienttest"
)

// result is what one run of sessionctl did.
type result struct {
	code           int
	stdout, stderr string
}

// env is the environment of a sessionctl pointed at srvURL.
func env(srvURL string) map[string]string {
	return map[string]string{"SESSIOND_URL": srvURL, "SESSIOND_API_KEY": clienttest.Key, "SESSIOND_API_SECRET": clienttest.Secret}
}

func runCtl(ctx context.Context, vars map[string]string, stdin string, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, func(k string) string { return vars[k] }, strings.NewReader(stdin), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// answering serves every request with status and body.
func answering(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	})
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCommands runs each command against a server that checks the v2
// signature of every request (clienttest), and checks the request it sent
// and what it printed.
func TestCommands(t *testing.T) {
	t.Parallel()
	personFile := writeFile(t, "person.json", "{\"first_name\":\"Ada\"}\n")
	bodyFile := writeFile(t, "body.json", `{"ref_id":"from-file"}`)
	type row struct {
		args       []string
		stdin      string
		wantMethod string
		wantTarget string
		wantBody   string
		wantHeader map[string]string
	}
	rows := []row{
		{args: []string{"sessions", "create", "--ref-id", "user-42", "--flow-id", "F", "--person", `{"first_name":"Ada"}`, "--metadata", ` {"a":1} `, "--force", "--idempotency-key", "K1"},
			wantMethod: "POST", wantTarget: "/v1/sessions",
			wantBody:   `{"ref_id":"user-42","flow_id":"F","person":{"first_name":"Ada"},"metadata":{"a":1},"force_creation":true}`,
			wantHeader: map[string]string{"Idempotency-Key": "K1"}},
		{args: []string{"sessions", "create", "--ref-id", "u", "--person", "-"}, stdin: "{\"first_name\":\"Ada\"}\n",
			wantMethod: "POST", wantTarget: "/v1/sessions", wantBody: `{"ref_id":"u","person":{"first_name":"Ada"}}`},
		{args: []string{"sessions", "create", "--person", "@" + personFile, "--ref-id", "u"},
			wantMethod: "POST", wantTarget: "/v1/sessions", wantBody: `{"ref_id":"u","person":{"first_name":"Ada"}}`},
		{args: []string{"sessions", "get", "8a1b"}, wantMethod: "GET", wantTarget: "/v1/sessions/8a1b"},
		{args: []string{"sessions", "get", "a/b c"}, wantMethod: "GET", wantTarget: "/v1/sessions/a%2Fb%20c"},
		{args: []string{"sessions", "list", "--ref-id", "user 42", "--status", "approved", "--limit", "5", "--cursor", "c1"},
			wantMethod: "GET", wantTarget: "/v1/sessions?cursor=c1&limit=5&ref_id=user+42&status=approved"},
		{args: []string{"sessions", "list"}, wantMethod: "GET", wantTarget: "/v1/sessions"},
		{args: []string{"sessions", "update", "8a1b", "--metadata", `{"a":1}`, "--tags", "a,b", "--tags", "c"},
			wantMethod: "PATCH", wantTarget: "/v1/sessions/8a1b", wantBody: `{"metadata":{"a":1},"tags":["a","b","c"]}`},
		{args: []string{"sessions", "update", "--tags=", "8a1b"},
			wantMethod: "PATCH", wantTarget: "/v1/sessions/8a1b", wantBody: `{"tags":[]}`},
		{args: []string{"sessions", "status", "8a1b", "submitted"},
			wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/status", wantBody: `{"status":"submitted"}`},
		{args: []string{"sessions", "decide", "8a1b", "declined", "--reason", "blurry", "--reason-code", "0"},
			wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/decision", wantBody: `{"status":"declined","reason":"blurry","reason_code":0}`},
		{args: []string{"sessions", "decide", "--reason", "ok", "8a1b", "approved"},
			wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/decision", wantBody: `{"status":"approved","reason":"ok"}`},
		{args: []string{"sessions", "cancel", "8a1b"}, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/cancel"},
		{args: []string{"sessions", "expire", "8a1b"}, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/expire"},
		{args: []string{"sessions", "resume", "8a1b"}, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/resume"},
		{args: []string{"sessions", "delete", "8a1b"}, wantMethod: "DELETE", wantTarget: "/v1/sessions/8a1b"},
		{args: []string{"sessions", "redact", "8a1b"}, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/redact"},
		{args: []string{"sessions", "deliveries", "8a1b"}, wantMethod: "GET", wantTarget: "/v1/sessions/8a1b/deliveries"},
		{args: []string{"deliveries", "replay", "8a1b~e1~default"}, wantMethod: "POST", wantTarget: "/v1/deliveries/8a1b~e1~default/replay"},
		{args: []string{"events", "--after", "17-3", "--limit", "10"}, wantMethod: "GET", wantTarget: "/v1/events?after=17-3&limit=10"},
		{args: []string{"events"}, wantMethod: "GET", wantTarget: "/v1/events"},
		{args: []string{"tokens", "introspect", "vst_x"},
			wantMethod: "POST", wantTarget: "/v1/tokens/introspect", wantBody: `{"token":"vst_x"}`},
		{args: []string{"tokens", "introspect", "-"}, stdin: "  vst_from_stdin\n",
			wantMethod: "POST", wantTarget: "/v1/tokens/introspect", wantBody: `{"token":"vst_from_stdin"}`},
		{args: []string{"endpoints", "list"}, wantMethod: "GET", wantTarget: "/v1/endpoints"},
		{args: []string{"endpoints", "get", "ep_1"}, wantMethod: "GET", wantTarget: "/v1/endpoints/ep_1"},
		{args: []string{"endpoints", "create", "--url", "https://h.example/x", "--event", "session.approved,session.declined", "--event", "session.expired",
			"--description", "main", "--header", "X-B=2", "--header", "X-A=1"},
			wantMethod: "POST", wantTarget: "/v1/endpoints",
			wantBody: `{"url":"https://h.example/x","events":["session.approved","session.declined","session.expired"],"description":"main","headers":{"X-A":"1","X-B":"2"}}`},
		{args: []string{"endpoints", "create", "--url", "https://h.example/x"},
			wantMethod: "POST", wantTarget: "/v1/endpoints", wantBody: `{"url":"https://h.example/x"}`},
		{args: []string{"endpoints", "update", "ep_1", "--disabled=false"},
			wantMethod: "PATCH", wantTarget: "/v1/endpoints/ep_1", wantBody: `{"disabled":false}`},
		{args: []string{"endpoints", "update", "ep_1", "--url", "https://n.example", "--event", "session.approved", "--description", "", "--header=", "--disabled"},
			wantMethod: "PATCH", wantTarget: "/v1/endpoints/ep_1",
			wantBody: `{"url":"https://n.example","events":["session.approved"],"description":"","headers":{},"disabled":true}`},
		{args: []string{"endpoints", "delete", "ep_1"}, wantMethod: "DELETE", wantTarget: "/v1/endpoints/ep_1"},
		{args: []string{"endpoints", "rotate-secret", "ep_1", "--overlap", "24h"},
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/rotate-secret", wantBody: `{"overlap":"24h"}`},
		{args: []string{"endpoints", "rotate-secret", "ep_1"},
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/rotate-secret", wantBody: `{}`},
		{args: []string{"endpoints", "test", "ep_1", "--type", "session.approved"},
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/test", wantBody: `{"type":"session.approved"}`},
		{args: []string{"endpoints", "recover", "ep_1", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-02T00:00:00.5+01:00"},
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/recover",
			wantBody: `{"since":"2026-01-01T00:00:00.000Z","until":"2026-01-01T23:00:00.500Z"}`},
		{args: []string{"recoveries", "get", "rec_1"}, wantMethod: "GET", wantTarget: "/v1/recoveries/rec_1"},
		{args: []string{"api", "GET", "/v1/sessions?status=review&limit=2"}, wantMethod: "GET", wantTarget: "/v1/sessions?status=review&limit=2"},
		{args: []string{"api", "post", "v1/sessions", `{"ref_id":"u"}`, "-H", "Idempotency-Key: k2", "--header", "X-Trace:t"},
			wantMethod: "POST", wantTarget: "/v1/sessions", wantBody: `{"ref_id":"u"}`,
			wantHeader: map[string]string{"Idempotency-Key": "k2", "X-Trace": "t"}},
		{args: []string{"api", "POST", "/v1/sessions", "@" + bodyFile},
			wantMethod: "POST", wantTarget: "/v1/sessions", wantBody: `{"ref_id":"from-file"}`},
		{args: []string{"api", "PATCH", "/v1/endpoints/ep_1", "-"}, stdin: `{"disabled":true}`,
			wantMethod: "PATCH", wantTarget: "/v1/endpoints/ep_1", wantBody: `{"disabled":true}`},
		{args: []string{"api", "DELETE", "/v1/sessions/8a1b"}, wantMethod: "DELETE", wantTarget: "/v1/sessions/8a1b"},
	}

	// Every leaf of the command tree is in the table.
	covered := map[string]bool{}
	for _, r := range rows {
		covered[strings.Join(r.args[:min(2, len(r.args))], " ")] = true
		covered[r.args[0]] = true
	}
	for _, leaf := range leaves(commands(), nil) {
		if !covered[strings.Join(leaf, " ")] {
			t.Errorf("command %q is not tested", strings.Join(leaf, " "))
		}
	}

	const answer = `{"id":"8a1b","status":"created"}`
	for _, tt := range rows {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			srv := clienttest.NewServer(t, clienttest.Config{}, answering(200, answer))
			res := runCtl(t.Context(), env(srv.URL), tt.stdin, tt.args...)
			if res.code != 0 || res.stdout != answer+"\n" || res.stderr != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 0, the answer, nothing", res.code, res.stdout, res.stderr)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tt.wantMethod || r.Target != tt.wantTarget {
				t.Errorf("request = %s %s, want %s %s", r.Method, r.Target, tt.wantMethod, tt.wantTarget)
			}
			if string(r.Body) != tt.wantBody {
				t.Errorf("body = %s, want %s", r.Body, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := r.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.wantHeader["Idempotency-Key"] == "" && r.Header.Get("Idempotency-Key") != "" {
				t.Errorf("an Idempotency-Key was sent unasked")
			}
		})
	}
}

// leaves returns the paths of the tree's leaves, e.g. ["sessions" "get"].
func leaves(c *command, path []string) [][]string {
	if len(c.subs) == 0 {
		return [][]string{path}
	}
	var out [][]string
	for _, s := range c.subs {
		out = append(out, leaves(s, append(path[:len(path):len(path)], s.name))...)
	}
	return out
}

func TestErrorAnswer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args   []string
		status int
		body   string
		want   string // in the stderr line
	}{
		{[]string{"sessions", "get", "8a1b"}, 404, `{"status":"fail","code":1104,"message":"Session not found."}`, "code 1104: Session not found."},
		{[]string{"sessions", "delete", "8a1b"}, 429, `{"status":"fail","code":1004,"message":"Too many deletes."}`, "code 1004"},
		{[]string{"sessions", "status", "8a1b", "started"}, 409, `{"status":"fail","code":1401,"message":"transition from approved to started not allowed"}`, "code 1401"},
		{[]string{"endpoints", "update", "ep_cfg", "--disabled"}, 409, `{"status":"fail","code":1409,"message":"Endpoint from the configuration file."}`, "code 1409"},
		{[]string{"api", "POST", "/v1/nope"}, 404, `{"status":"fail","code":1104,"message":"Not found."}`, "code 1104"},
		{[]string{"events", "--follow"}, 400, `{"status":"fail","code":1001,"message":"Invalid cursor."}`, "code 1001"},
		{[]string{"sessions", "cancel", "8a1b"}, 502, "<html>bad gateway</html>", "502: <html>bad gateway</html>"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			srv := clienttest.NewServer(t, clienttest.Config{}, answering(tt.status, tt.body))
			res := runCtl(t.Context(), env(srv.URL), "", tt.args...)
			if res.code != 1 {
				t.Errorf("exit %d, want 1", res.code)
			}
			if res.stdout != tt.body+"\n" {
				t.Errorf("stdout = %q, want the error answer %q", res.stdout, tt.body)
			}
			if !strings.Contains(res.stderr, tt.want) || strings.Count(res.stderr, "\n") != 1 || !strings.HasPrefix(res.stderr, "sessionctl: ") {
				t.Errorf("stderr = %q, want one line with %q", res.stderr, tt.want)
			}
		})
	}
}

func TestNoAnswer(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answering(200, "{}"))
	url := srv.URL
	srv.Close()
	res := runCtl(t.Context(), env(url), "", "sessions", "cancel", "8a1b")
	if res.code != 1 || res.stdout != "" || strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, "cancel session") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, one line", res.code, res.stdout, res.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args  []string
		stdin string
		want  string // in stderr
	}{
		{nil, "", "missing command"},
		{[]string{"bogus"}, "", `unknown command "bogus"`},
		{[]string{"sessions"}, "", "missing command"},
		{[]string{"sessions", "fly"}, "", `unknown command "fly"`},
		{[]string{"sessions", "get"}, "", "wants 1 argument, got 0"},
		{[]string{"sessions", "get", "a", "b"}, "", "wants 1 argument, got 2"},
		{[]string{"sessions", "get", ""}, "", "ID is empty"},
		{[]string{"sessions", "create"}, "", "--ref-id is required"},
		{[]string{"sessions", "create", "--ref-id", "u", "--person", `{"first_name":"Ad`}, "", "--person is not valid JSON"},
		{[]string{"sessions", "create", "--ref-id", "u", "--person", "-", "--metadata", "-"}, "{}", "stdin is already used"},
		{[]string{"sessions", "create", "--ref-id", "u", "--metadata", "@/nonexistent/x.json"}, "", "--metadata: open /nonexistent/x.json"},
		{[]string{"sessions", "list", "--limit", "ten"}, "", "invalid value"},
		{[]string{"sessions", "update", "8a1b"}, "", "nothing to update"},
		{[]string{"sessions", "decide", "8a1b"}, "", "wants 2 arguments, got 1"},
		{[]string{"sessions", "decide", "8a1b", "approved", "--reason-code", "x"}, "", "invalid value"},
		{[]string{"sessions", "cancel", "8a1b", "--force"}, "", "flag provided but not defined: -force"},
		{[]string{"events", "extra"}, "", "takes no arguments, got 1"},
		{[]string{"tokens", "introspect"}, "", "wants 1 argument, got 0"},
		{[]string{"tokens", "introspect", "-"}, "\n", "TOKEN is empty"},
		{[]string{"endpoints", "create"}, "", "--url is required"},
		{[]string{"endpoints", "update", "ep_1"}, "", "nothing to update"},
		{[]string{"endpoints", "update", "ep_1", "--header", "novalue"}, "", "want NAME=VALUE"},
		{[]string{"endpoints", "rotate-secret", "ep_1", "--overlap", "1x"}, "", "invalid value"},
		{[]string{"endpoints", "rotate-secret", "ep_1", "--overlap", "-1h"}, "", "must not be negative"},
		{[]string{"endpoints", "recover", "ep_1"}, "", "--since is required"},
		{[]string{"endpoints", "recover", "ep_1", "--since", "yesterday"}, "", "--since: want an RFC 3339 time"},
		{[]string{"endpoints", "recover", "ep_1", "--since", "2026-01-01T00:00:00Z", "--until", "2026"}, "", "--until: want an RFC 3339 time"},
		{[]string{"api", "GET"}, "", "wants 2 to 3 arguments, got 1"},
		{[]string{"api", "POST", "/v1/sessions", "@/nonexistent/body"}, "", "BODY: open /nonexistent/body"},
		{[]string{"api", "GET", "/v1/events", "-H", "NoColon"}, "", "want NAME:VALUE"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			srv := clienttest.NewServer(t, clienttest.Config{}, answering(200, "{}"))
			res := runCtl(t.Context(), env(srv.URL), tt.stdin, tt.args...)
			if res.code != 2 {
				t.Errorf("exit %d, want 2", res.code)
			}
			if !strings.Contains(res.stderr, tt.want) || !strings.Contains(res.stderr, "\nUsage: sessionctl") {
				t.Errorf("stderr = %q, want %q and the usage", res.stderr, tt.want)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Errorf("%d requests sent", n)
			}
			if strings.Contains(res.stderr, `"first_name"`) {
				t.Errorf("stderr repeats the personal data: %q", res.stderr)
			}
		})
	}
}

// TestHelp: --help works at every level of the tree, on stdout, exit 0.
func TestHelp(t *testing.T) {
	t.Parallel()
	type row struct {
		args []string
		want string
	}
	rows := []row{
		{[]string{"help"}, "Usage: sessionctl <command>"},
		{[]string{"-h"}, "Usage: sessionctl <command>"},
		{[]string{"help", "sessions", "create"}, "Usage: sessionctl sessions create --ref-id"},
		{[]string{"sessions", "-h"}, "Usage: sessionctl sessions <command>"},
		{[]string{"sessions", "get", "-h"}, "Usage: sessionctl sessions get ID"},
		{[]string{"sessions", "get", "8a1b", "--help"}, "Usage: sessionctl sessions get ID"},
	}
	var walk func(c *command, path []string)
	walk = func(c *command, path []string) {
		rows = append(rows, row{append(path[:len(path):len(path)], "--help"), "Usage: " + strings.Join(append([]string{"sessionctl"}, path...), " ")})
		for _, s := range c.subs {
			walk(s, append(path[:len(path):len(path)], s.name))
		}
	}
	walk(commands(), nil)
	for _, tt := range rows {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			res := runCtl(t.Context(), nil, "", tt.args...)
			first, _, _ := strings.Cut(res.stdout, "\n")
			if res.code != 0 || (first != tt.want && !strings.HasPrefix(first, tt.want+" ")) || res.stderr != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 0 and %q on stdout", res.code, res.stdout, res.stderr, tt.want)
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answering(200, `{"endpoints":[]}`))
	for _, tt := range []struct {
		name string
		vars map[string]string
		code int
		want string
	}{
		{"no key", map[string]string{"SESSIOND_URL": srv.URL, "SESSIOND_API_SECRET": clienttest.Secret}, 2, "SESSIOND_API_KEY is not set"},
		{"no secret", map[string]string{"SESSIOND_URL": srv.URL, "SESSIOND_API_KEY": clienttest.Key}, 2, "SESSIOND_API_SECRET is not set"},
		{"neither", map[string]string{"SESSIOND_URL": srv.URL}, 2, "SESSIOND_API_KEY and SESSIOND_API_SECRET are not set"},
		{"bad url", map[string]string{"SESSIOND_URL": "ftp://h", "SESSIOND_API_KEY": "k", "SESSIOND_API_SECRET": "s"}, 2, "SESSIOND_URL base URL must be http:// or https://"},
		{"rotation list signs with the first", map[string]string{"SESSIOND_URL": srv.URL, "SESSIOND_API_KEY": clienttest.Key,
			"SESSIOND_API_SECRET": clienttest.Secret + ",older-secret"}, 0, ""},
	} {
		res := runCtl(t.Context(), tt.vars, "", "endpoints", "list")
		if res.code != tt.code || !strings.Contains(res.stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tt.name, res.code, res.stderr, tt.code, tt.want)
		}
		if tt.code == 2 && (res.stdout != "" || strings.Contains(res.stderr, "Usage:")) {
			t.Errorf("%s: stdout %q, stderr %q; want nothing and no usage", tt.name, res.stdout, res.stderr)
		}
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d requests, want only the one with credentials", n)
	}
}

// TestDefaultURL: without SESSIOND_URL, sessionctl calls 127.0.0.1:8080.
func TestDefaultURL(t *testing.T) {
	t.Parallel()
	x := &invocation{getenv: func(k string) string {
		return map[string]string{"SESSIOND_API_KEY": "k", "SESSIOND_API_SECRET": "s"}[k]
	}}
	c, err := x.client()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c); !strings.Contains(got, "http://127.0.0.1:8080,") {
		t.Errorf("client = %s, want one of http://127.0.0.1:8080", got)
	}
}

// syncBuffer is a stdout that run's follow loop writes while the test
// reads; lines signals each write.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	lines chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	s.lines <- struct{}{}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEventsFollow: events from two pages are printed one per line, then
// the command waits on an empty feed and ends, exit 0, when the context is
// cancelled.
func TestEventsFollow(t *testing.T) {
	t.Parallel()
	ev := func(id, cursor string) string {
		return `{"id":"` + id + `","cursor":"` + cursor + `","type":"session.created","timestamp":"2026-01-02T03:04:05.600Z","data":{"id":"s1","sequence":1}}`
	}
	pages := map[string]string{
		"":    `{"events":[` + ev("e1", "1-0") + `,` + "\n  " + ev("e2", "2-0") + `],"next_cursor":"2-0"}`,
		"2-0": `{"events":[` + ev("e3", "3-0") + `],"next_cursor":"3-0"}`,
		"3-0": `{"events":[],"next_cursor":"3-0"}`,
	}
	polledEmpty := make(chan struct{}, 100)
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after := r.URL.Query().Get("after")
		page, ok := pages[after]
		if !ok || r.URL.Path != "/v1/events" || r.URL.Query().Get("limit") != "2" {
			t.Errorf("unexpected request %s", r.RequestURI)
		}
		w.Write([]byte(page))
		if after == "3-0" {
			polledEmpty <- struct{}{}
		}
	}))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stdout := &syncBuffer{lines: make(chan struct{}, 100)}
	var stderr bytes.Buffer
	done := make(chan int, 1)
	vars := env(srv.URL)
	go func() {
		done <- run(ctx, []string{"events", "--follow", "--limit", "2"}, func(k string) string { return vars[k] }, strings.NewReader(""), stdout, &stderr)
	}()
	for range 3 {
		select {
		case <-stdout.lines:
		case <-time.After(10 * time.Second):
			t.Fatalf("3 events not printed; stdout %q", stdout.String())
		}
	}
	select {
	case <-polledEmpty:
	case <-time.After(10 * time.Second):
		t.Fatal("the empty page was not polled")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after cancel, want 0; stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the context was cancelled")
	}
	want := ev("e1", "1-0") + "\n" + ev("e2", "2-0") + "\n" + ev("e3", "3-0") + "\n"
	if got := stdout.String(); got != want {
		t.Errorf("stdout =\n%s\nwant\n%s", got, want)
	}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("line %q is not JSON", line)
		}
	}
}

// TestNothingSecretPrinted: the API secret, the signature and a token
// given on stdin appear neither on stdout nor on stderr, whatever the
// answer.
func TestNothingSecretPrinted(t *testing.T) {
	t.Parallel()
	const token = "vst_never_printed_0123"
	for _, status := range []int{200, 400, 502} {
		srv := clienttest.NewServer(t, clienttest.Config{}, answering(status, `{"active":false}`))
		res := runCtl(t.Context(), env(srv.URL), token+"\n", "tokens", "introspect", "-")
		secrets := []string{token, clienttest.Secret}
		for _, r := range srv.Requests() {
			secrets = append(secrets, r.Header.Get("X-HMAC-SIGNATURE"))
		}
		for _, s := range secrets {
			if strings.Contains(res.stdout+res.stderr, s) {
				t.Errorf("status %d: output holds %q: %q %q", status, s, res.stdout, res.stderr)
			}
		}
	}
}

func newTestFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args    []string
		wantPos []string
		wantR   string
		wantB   bool
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, "", false},
		{[]string{"a", "--r", "x", "b", "--b"}, []string{"a", "b"}, "x", true},
		{[]string{"--b", "a", "-"}, []string{"a", "-"}, "", true},
		{[]string{"a", "--", "--b", "-r"}, []string{"a", "--b", "-r"}, "", false},
		{[]string{"--r=--", "a", "--b"}, []string{"a"}, "--", true},
	} {
		fs := newTestFlagSet()
		r := fs.String("r", "", "")
		b := fs.Bool("b", false, "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil || strings.Join(pos, "|") != strings.Join(tt.wantPos, "|") || *r != tt.wantR || *b != tt.wantB {
			t.Errorf("%q: pos %q r %q b %v err %v; want %q %q %v", tt.args, pos, *r, *b, err, tt.wantPos, tt.wantR, tt.wantB)
		}
	}
}
