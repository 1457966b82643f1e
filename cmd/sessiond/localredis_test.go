//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// needRedisServer skips the test when redis-server is not installed, unless
// SESSIOND_REQUIRE_REDIS is set (as in CI).
func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SESSIOND_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found in PATH: install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found in PATH; install Redis to run this test")
	}
}

// privateTempDir points os.TempDir at a new empty directory for this test,
// so the test can see what startLocalRedis leaves behind.
func privateTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s still holds %v", dir, entries)
	}
}

// redisInfo returns one field of INFO server.
func redisInfo(t *testing.T, c *redis.Client, field string) string {
	t.Helper()
	info, err := c.Info(t.Context(), "server").Result()
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	t.Fatalf("INFO server has no %s", field)
	return ""
}

func TestStartLocalRedis(t *testing.T) {
	needRedisServer(t)
	tmp := privateTempDir(t)

	url, stop, err := startLocalRedis(t.Context(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("startLocalRedis: %v", err)
	}
	t.Cleanup(func() { _ = stop() })

	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	if !strings.HasPrefix(opts.Addr, "127.0.0.1:") || opts.Password == "" {
		t.Errorf("URL gives addr %q, password set %t; want 127.0.0.1 and a password", opts.Addr, opts.Password != "")
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	for param, want := range map[string]string{"appendonly": "yes", "appendfsync": "everysec", "bind": "127.0.0.1"} {
		got, err := c.ConfigGet(t.Context(), param).Result()
		if err != nil || got[param] != want {
			t.Errorf("CONFIG GET %s = %v, %v; want %q", param, got, err, want)
		}
	}
	noAuth := redis.NewClient(&redis.Options{Addr: opts.Addr, MaxRetries: -1})
	defer noAuth.Close()
	if err := noAuth.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("PING without password: %v, want NOAUTH", err)
	}

	dir, err := c.ConfigGet(t.Context(), "dir").Result()
	if err != nil || !strings.HasPrefix(dir["dir"], tmp) {
		t.Fatalf("CONFIG GET dir = %v, %v; want a directory in %s", dir, err, tmp)
	}
	pid, err := strconv.Atoi(redisInfo(t, c, "process_id"))
	if err != nil {
		t.Fatalf("process_id: %v", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// stop reaps the child, so the pid is free: signal 0 must find nothing.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after stop = %v, want ESRCH", pid, err)
	}
	if _, err := os.Stat(dir["dir"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s after stop = %v, want not exist", dir["dir"], err)
	}
	assertEmptyDir(t, tmp)
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

func TestStartLocalRedisStopAfterCrash(t *testing.T) {
	needRedisServer(t)
	tmp := privateTempDir(t)

	url, stop, err := startLocalRedis(t.Context(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("startLocalRedis: %v", err)
	}
	opts, _ := redis.ParseURL(url)
	c := redis.NewClient(opts)
	defer c.Close()
	pid, err := strconv.Atoi(redisInfo(t, c, "process_id"))
	if err != nil {
		t.Fatalf("process_id: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stop after crash: %v", err)
		}
	case <-time.After(localRedisStopTimeout / 2):
		t.Fatal("stop after crash did not return")
	}
	assertEmptyDir(t, tmp)
}

func TestStartLocalRedisCanceled(t *testing.T) {
	needRedisServer(t)
	tmp := privateTempDir(t)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := startLocalRedis(ctx, slog.New(slog.DiscardHandler))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("startLocalRedis with a canceled context: %v, want context.Canceled", err)
	}
	assertEmptyDir(t, tmp)
}

func TestStartLocalRedisNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, stop, err := startLocalRedis(t.Context(), slog.New(slog.DiscardHandler))
	if err == nil || stop != nil {
		t.Fatalf("startLocalRedis without redis-server: err %v, stop %v", err, stop != nil)
	}
	const want = "redis-server not found in PATH: install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set SESSIOND_REDIS_URL"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// TestLocalRedisDiesWithParent runs startLocalRedis in a child copy of the
// test binary, SIGKILLs that child and expects its redis-server to go too.
func TestLocalRedisDiesWithParent(t *testing.T) {
	if os.Getenv("SESSIOND_LOCALREDIS_HELPER") == "1" {
		url, _, err := startLocalRedis(t.Context(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("startLocalRedis: %v", err)
		}
		fmt.Println("URL=" + url)
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent kills us
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("only Linux kills the child when the parent dies")
	}
	needRedisServer(t)

	helper := exec.Command(os.Args[0], "-test.run=^TestLocalRedisDiesWithParent$")
	helper.Env = append(os.Environ(), "SESSIOND_LOCALREDIS_HELPER=1", "TMPDIR="+t.TempDir())
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	var url string
	for sc := bufio.NewScanner(stdout); url == "" && sc.Scan(); {
		url, _ = strings.CutPrefix(sc.Text(), "URL=")
	}
	if url == "" {
		t.Fatal("helper printed no URL")
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING before kill: %v", err)
	}

	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	// A killed redis-server may linger as a zombie, so watch its port, not its pid.
	deadline := time.Now().Add(5 * time.Second)
	for c.Ping(t.Context()).Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("redis-server still answers 5s after its parent was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
