//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/daemontest"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/signing"
)

// TestFloodUnknownKey opens 300 connections at once to a real daemon, each
// sending a request under an unknown API key with a 1 MiB body: every one
// is refused with 401 code 1102 before its body is read. It reports the
// daemon's peak RSS (VmHWM), which stays bounded because no body is read.
func TestFloodUnknownKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon")
	}
	t.Parallel()
	redis := redistest.Start(t)
	bin := daemontest.Build(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "SESSIOND_REDIS_URL="+redis.URL(), "SESSIOND_ADMIN_ADDR="+addr,
		"SESSIOND_API_KEY="+testAPIKey, "SESSIOND_API_SECRET="+testAPISecret)
	logs := newLogSink()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitHTTP(t, "http://"+addr+"/readyz", 30*time.Second)
	before := vmHWM(t, cmd.Process.Pid)

	const conns, bodySize = 300, 1 << 20
	chunk := make([]byte, 64<<10)
	var wg sync.WaitGroup
	codes := make([]string, conns)
	for i := range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				codes[i] = "dial: " + err.Error()
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			h := http.Header{}
			signing.SetRequestHeaders(h, "intruder", []byte("not-a-secret-0123456789"), "POST", "/v1/sessions", nil, time.Now())
			req := fmt.Sprintf("POST /v1/sessions HTTP/1.1\r\nHost: sessiond\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", bodySize)
			for k, v := range h {
				req += k + ": " + v[0] + "\r\n"
			}
			if _, err := io.WriteString(c, req+"\r\n"); err != nil {
				codes[i] = "write: " + err.Error()
				return
			}
			go func() { // the body, as fast as the daemon takes it
				for sent := 0; sent < bodySize; sent += len(chunk) {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				codes[i] = "read: " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			codes[i] = strconv.Itoa(resp.StatusCode) + " " + strings.TrimSpace(string(b))
		})
	}
	wg.Wait()
	want := `401 {"status":"fail","code":1102,"message":"Authentication failed."}`
	for i, c := range codes {
		if c != want {
			t.Errorf("connection %d: %s, want %s", i, c, want)
			break
		}
	}
	after := vmHWM(t, cmd.Process.Pid)
	t.Logf("daemon peak RSS (VmHWM): %d MiB before the flood, %d MiB after %d connections × %d KiB bodies under an unknown key",
		before>>10, after>>10, conns, bodySize>>10)
}

// vmHWM is a process's peak resident set size in KiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmHWM in /proc/pid/status")
	return 0
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 200 within %v (%v)", url, within, err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
