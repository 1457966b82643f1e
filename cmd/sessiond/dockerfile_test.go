package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
	Line int
}

// stage is one FROM ... block.
type stage struct {
	From, Name string
	Body       []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages []stage
		cur    *stage
		buf    strings.Builder
		start  int
	)
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if buf.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if buf.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			buf.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		buf.WriteString(trimmed)
		cmd, args, _ := strings.Cut(buf.String(), " ")
		buf.Reset()
		in := instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := stage{From: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			stages = append(stages, st)
			cur = &stages[len(stages)-1]
			continue
		}
		if cur != nil {
			cur.Body = append(cur.Body, in)
		}
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Body {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// TestDockerfile checks, without a Docker engine, what the sidecar image
// promises: a build stage that makes a static binary, a final stage that
// runs it as a numeric non-root user from an exec-form ENTRYPOINT, and the
// admin port exposed.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t, "../../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// Build stage: static, no cgo.
	if build.Name == "" {
		t.Errorf("the build stage (FROM %s) has no name to copy from", build.From)
	}
	static := false
	for _, in := range append(build.all("ENV"), build.all("RUN")...) {
		static = static || strings.Contains(in.Args, "CGO_ENABLED=0")
	}
	if !static {
		t.Errorf("the build stage never sets CGO_ENABLED=0")
	}
	built := ""
	for _, in := range build.all("RUN") {
		if i := strings.Index(in.Args, "go build"); i >= 0 {
			if !strings.Contains(in.Args, "./cmd/sessiond") {
				t.Errorf("line %d: go build does not build ./cmd/sessiond", in.Line)
			}
			f := strings.Fields(in.Args[i:])
			for j, a := range f {
				if a == "-o" && j+1 < len(f) {
					built = f[j+1]
				}
			}
		}
	}
	if built == "" {
		t.Fatalf("the build stage has no `go build -o <path>`")
	}

	// Final stage: a minimal static base, the binary copied from the
	// build, a numeric non-root user, an exec-form ENTRYPOINT.
	if !strings.Contains(final.From, "distroless/static") && final.From != "scratch" {
		t.Errorf("runtime base %q: want distroless/static or scratch (no shell, no libc)", final.From)
	}
	copied := ""
	for _, in := range final.all("COPY") {
		f := strings.Fields(in.Args)
		if len(f) == 3 && f[0] == "--from="+build.Name && f[1] == built {
			copied = f[2]
		}
		for _, src := range f[:len(f)-1] {
			if !strings.HasPrefix(src, "--") && !strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("line %d: COPY source %s: %v", in.Line, src, err)
				}
			}
		}
	}
	if copied == "" {
		t.Errorf("the runtime stage does not COPY --from=%s %s", build.Name, built)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Errorf("the runtime stage has no USER: it would run as root")
	} else {
		u := users[len(users)-1].Args
		uid, _, _ := strings.Cut(u, ":")
		n, err := strconv.Atoi(uid)
		if err != nil || n == 0 {
			t.Errorf("USER %s: want a numeric non-zero uid (runAsNonRoot can only verify a number)", u)
		}
	}
	eps := final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("the runtime stage has %d ENTRYPOINTs, want 1", len(eps))
	}
	var argv []string
	if err := json.Unmarshal([]byte(eps[0].Args), &argv); err != nil || len(argv) == 0 {
		t.Errorf("ENTRYPOINT %s: want the exec form, a JSON array, so SIGTERM reaches sessiond", eps[0].Args)
	} else if argv[0] != copied {
		t.Errorf("ENTRYPOINT runs %s, the binary is copied to %s", argv[0], copied)
	}
	for _, in := range final.all("CMD") {
		if !strings.HasPrefix(in.Args, "[") {
			t.Errorf("line %d: CMD in shell form", in.Line)
		}
	}

	// The exposed port is the one the image's admin address listens on.
	var addr string
	for _, in := range final.all("ENV") {
		if v, ok := strings.CutPrefix(in.Args, "SESSIOND_ADMIN_ADDR="); ok {
			addr = v
		}
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("runtime ENV SESSIOND_ADMIN_ADDR=%q: %v", addr, err)
	}
	exposed := false
	for _, in := range final.all("EXPOSE") {
		exposed = exposed || slices.Contains(strings.Fields(in.Args), port)
	}
	if !exposed {
		t.Errorf("EXPOSE does not list the admin port %s", port)
	}

	// The build context leaves local state out.
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	for _, want := range []string{".git", "bin"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}
