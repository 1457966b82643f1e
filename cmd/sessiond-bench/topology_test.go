package main

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		bad        bool
	}{
		// utime 250, stime 130 ticks: 3.8 s.
		{"plain", "4242 (sessiond) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 130 0 0 20 0 9 0 100 2000000 3000", 3800 * time.Millisecond, false},
		// A name with spaces and a ')' inside must not shift the fields.
		{"odd name", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 100 10", 30 * time.Millisecond, false},
		{"no name", "4242 sessiond S 1", 0, true},
		{"short", "4242 (sessiond) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250", 0, true},
		{"not a number", "4242 (x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 2x0 130 0", 0, true},
	} {
		got, err := parseProcStat(tc.stat)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("%s: parseProcStat = %v, %v; want %v, error %v", tc.name, got, err, tc.want, tc.bad)
		}
	}
}

func TestParseInfo(t *testing.T) {
	info := strings.Join([]string{
		"# Server", "redis_version:7.0.15", "tcp_port:7001",
		"# Memory", "used_memory:1048576", "used_memory_human:1.00M",
		"# Stats", "total_commands_processed:1234", "total_reads_processed:567",
		"# CPU", "used_cpu_sys:1.250000", "used_cpu_user:2.500000", "used_cpu_sys_children:9.000000",
		"# Commandstats", "cmdstat_evalsha:calls=12,usec=340,usec_per_call=28.33,rejected_calls=0,failed_calls=0",
		"cmdstat_eval:calls=3,usec=40,usec_per_call=13.33,rejected_calls=0,failed_calls=0",
		"cmdstat_get:calls=99,usec=10,usec_per_call=0.10,rejected_calls=0,failed_calls=0",
		"# Keyspace", "db0:keys=10,expires=2,avg_ttl=0", "db1:keys=5,expires=0,avg_ttl=0",
	}, "\r\n")
	got, err := parseInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	want := redisStats{Addr: "127.0.0.1:7001", Commands: 1234, Reads: 567, CPU: 3.75, Memory: 1048576, Calls: 15, Keys: 15,
		PerCommand: map[string]int64{"evalsha": 12, "eval": 3, "get": 99}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseInfo = %+v, want %+v", got, want)
	}
	for _, drop := range []string{"total_commands_processed", "total_reads_processed", "used_memory:", "used_cpu_user"} {
		var kept []string
		for _, l := range strings.Split(info, "\r\n") {
			if !strings.HasPrefix(l, drop) {
				kept = append(kept, l)
			}
		}
		if _, err := parseInfo(strings.Join(kept, "\r\n")); err == nil {
			t.Errorf("parseInfo without %s succeeded", drop)
		}
	}
	if _, err := parseInfo("total_commands_processed:12x\n"); err == nil {
		t.Error("parseInfo with a bad number succeeded")
	}
}

func TestMastersSince(t *testing.T) {
	before := masters{{Addr: "a", Commands: 10, Reads: 5, CPU: 1, Memory: 100}, {Addr: "b", Commands: 20, Reads: 8, CPU: 2, Memory: 200}}
	after := masters{{Addr: "a", Commands: 15, Reads: 7, CPU: 1.5, Memory: 150}, {Addr: "b", Commands: 50, Reads: 9, CPU: 2.25, Memory: 180}}
	got, err := after.since(before)
	if err != nil {
		t.Fatal(err)
	}
	want := masters{{Addr: "a", Commands: 5, Reads: 2, CPU: 0.5, Memory: 50}, {Addr: "b", Commands: 30, Reads: 1, CPU: 0.25, Memory: -20}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("since = %+v, want %+v", got, want)
	}
	if s := got.sum(); s.Commands != 35 || s.Reads != 3 || s.CPU != 0.75 || s.Memory != 30 {
		t.Errorf("sum = %+v, want 35 commands, 3 reads, 0.75 s, 30 B", s)
	}
	if _, err := (masters{{Addr: "c"}}).since(before); err == nil {
		t.Error("since with a new master succeeded")
	}
	if _, err := (masters{{Addr: "a", Commands: 1}}).since(before); err == nil {
		t.Error("since with counters that went down (a restart) succeeded")
	}
}

// TestReadMasters reads INFO from real servers: on one Redis the growth
// of total_commands_processed is exactly what was sent (a script's
// commands included), on a Sentinel set it is the master's, and on a
// cluster it lands on the master that holds the keys.
func TestReadMasters(t *testing.T) {
	ctx := t.Context()
	t.Run("single", func(t *testing.T) {
		srv := redistest.Start(t)
		d := growth(t, srv.URL(), func(rdb redis.UniversalClient) {
			for i := range 10 {
				rdb.Set(ctx, fmt.Sprint("k", i), i, 0)
			}
			rdb.Eval(ctx, "for i=1,5 do redis.call('incr', KEYS[1]) end return 1", []string{"n"})
		})
		// 1 INFO (the first sample's) + 10 SET + 1 EVAL + 5 INCR inside it.
		if len(d) != 1 || d[0].Addr != srv.Addr || d[0].Commands != 17 || d[0].Calls != 1 || d[0].Keys != 11 || d[0].Reads < 12 {
			t.Errorf("growth %+v; want 1 master %s, 17 commands, 1 script run, 11 keys, at least 12 reads", d, srv.Addr)
		}
		if want := map[string]int64{"info": 1, "set": 10, "eval": 1, "incr": 5}; len(d) == 1 && !reflect.DeepEqual(d[0].PerCommand, want) {
			t.Errorf("growth by command %v, want %v", d[0].PerCommand, want)
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		set := redistest.StartSentinel(t)
		d := growth(t, set.URL(), func(rdb redis.UniversalClient) {
			for i := range 10 {
				rdb.Set(ctx, fmt.Sprint("k", i), i, 0)
			}
		})
		master, err := set.MasterAddr(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The master's INFO only; the replicas' and the sentinels' traffic
		// to it (REPLCONF ACK, PING, PUBLISH) may add to the 10 SET.
		if len(d) != 1 || d[0].Addr != master || d[0].PerCommand["set"] != 10 || d[0].Commands < 11 {
			t.Errorf("growth %+v; want 1 master %s, 10 SET, at least 11 commands", d, master)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t)
		const tag = "{bench}"
		owner := c.NodeForKey(tag).Addr
		d := growth(t, c.URL(), func(rdb redis.UniversalClient) {
			for i := range 40 {
				rdb.Set(ctx, fmt.Sprint(tag, i), i, 0)
			}
		})
		if len(d) != 3 {
			t.Fatalf("%d masters, want 3: %+v", len(d), d)
		}
		for _, m := range d {
			if m.Addr == owner && (m.Commands < 41 || m.Commands > 44) {
				t.Errorf("master %s (holds %s) grew by %d commands, want 41 to 44", m.Addr, tag, m.Commands)
			}
			if m.Addr != owner && m.Commands > 4 {
				t.Errorf("master %s grew by %d commands, want at most 4 (INFO, a slot reload)", m.Addr, m.Commands)
			}
		}
	})
}

// growth connects to url as the tool does, reads every master's INFO,
// runs do and returns each master's growth since.
func growth(t *testing.T, url string, do func(rdb redis.UniversalClient)) masters {
	t.Helper()
	rdb := mustConn(t, url).Client(redisconn.Pool{Name: "bench-test"})
	defer rdb.Close()
	// A first read connects (HELLO, CLIENT SETNAME) outside the sample.
	if _, err := readMasters(t.Context(), rdb); err != nil {
		t.Fatal(err)
	}
	m0, err := readMasters(t.Context(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	do(rdb)
	m1, err := readMasters(t.Context(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m1.since(m0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustConn(t *testing.T, url string) *redisconn.Conn {
	t.Helper()
	c, err := redisconn.Parse(url, redisconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckTopology(t *testing.T) {
	for _, tc := range []struct {
		topology string
		min      int
		ok       bool
	}{
		{"single", 0, true}, {"cluster", 0, true}, {"sentinel", 0, true}, {"sentinel", 1, true}, {"sentinel", 2, true},
		{"single", 1, false}, {"cluster", 1, false}, {"sentinel", 3, false}, {"sentinel", -1, false}, {"mesh", 0, false},
	} {
		if err := checkTopology(tc.topology, tc.min); (err == nil) != tc.ok {
			t.Errorf("checkTopology(%q, %d) = %v, want ok %v", tc.topology, tc.min, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		args     []string
		topology string
		min      int
	}{
		{nil, "single", 0},
		{[]string{"--topology=sentinel"}, "sentinel", 1},
		{[]string{"--topology=sentinel", "--min-replicas=0"}, "sentinel", 0},
		{[]string{"--topology=cluster"}, "cluster", 0},
	} {
		d, err := parseDrillFlags(tc.args, &bytes.Buffer{})
		if err != nil || d.Topology != tc.topology || d.MinReplicas != tc.min {
			t.Errorf("drill %v: %q, %d, %v; want %q, %d", tc.args, d.Topology, d.MinReplicas, err, tc.topology, tc.min)
		}
		b, err := parseBenchFlags(tc.args, &bytes.Buffer{})
		if err != nil || b.Topology != tc.topology || b.MinReplicas != tc.min {
			t.Errorf("bench %v: %q, %d, %v; want %q, %d", tc.args, b.Topology, b.MinReplicas, err, tc.topology, tc.min)
		}
	}
	if _, err := parseDrillFlags([]string{"--topology=cluster", "--min-replicas=1"}, &bytes.Buffer{}); err == nil {
		t.Error("--min-replicas=1 on a cluster without replicas accepted")
	}
}

func TestNotDurable(t *testing.T) {
	made := `{"status":"fail","code":1000,"message":"The change was made but is not yet on enough Redis replicas: a failover now could lose it. Read the session before you retry."}`
	for _, tc := range []struct {
		resp response
		want bool
	}{
		{response{503, []byte(made)}, true},
		{response{503, []byte(`{"status":"fail","code":1000,"message":"Cannot check the nonce; retry."}`)}, false},
		{response{500, []byte(made)}, false},
	} {
		if got := notDurable(tc.resp); got != tc.want {
			t.Errorf("notDurable(%d %s) = %v, want %v", tc.resp.status, tc.resp.body, got, tc.want)
		}
	}
}

// TestTargets checks that a figure is marked by its target and that the
// table shows the before column and the misses.
func TestTargets(t *testing.T) {
	r := benchResult{
		Idle:       idleResult{Seconds: 10, CommandsPS: 130, BackgroundPS: 40, DaemonPS: 90, DaemonCores: 0.05},
		Cost:       costResult{Sessions: 1000, RoundTrips: 10.5, Commands: 30},
		WebhookSat: webhookResult{Events: 100, Delivered: 100, PerSec: 600},
		Asynq:      asynqCeiling{ProcessPS: 1000},
		MemCreated: 3072, MemDecided: 7000,
	}
	r.figures()
	met := map[string]bool{}
	for _, f := range r.Figures {
		if f.Met != nil {
			met[f.Name] = *f.Met
		}
	}
	for name, want := range map[string]bool{
		"idle: Redis commands/s the daemon causes":                           true,  // 90 ≤ 100
		"idle: daemon CPU":                                                   false, // 0.05 > 0.03
		"cost: Redis round trips per session (total_reads_processed)":        false, // 10.5 > 10
		"webhooks, 100 decisions at saturation: deliveries":                  true,  // 0.6 ≥ 0.5
		"Redis memory per created session (all masters)":                     true,  // 3072 ≤ 3 KiB
		"Redis memory per decided session, 4 events delivered (all masters)": false, // 7000 > 6 KiB
	} {
		if got, ok := met[name]; !ok || got != want {
			t.Errorf("%s: met %v (present %v), want %v", name, got, ok, want)
		}
	}
	var buf bytes.Buffer
	r.writeTable(&buf)
	for _, s := range []string{"MISSED", beforeRoundTrips, beforeIdleCmds, "targets missed (3)"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, buf.String())
		}
	}
}
