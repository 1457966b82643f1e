package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Test secrets. Each is distinctive so a test can tell it never leaks.
const (
	apiSecret   = "api-secret-0123456789abcdef"
	apiSecret2  = "other-api-secret-0123456789"
	uiPassword  = "ui-password-s3cr3t"
	hmacSecret1 = "whsec_c2VjcmV0LW51bWJlci1vbmUtMTIzNDU2Nzg5MA=="    // "secret-number-one-1234567890"
	hmacSecret2 = "whsec_c2VjcmV0LW51bWJlci10d28tMTIzNDU2Nzg5MA=="    // "secret-number-two-1234567890"
	edKey       = "whsk_ZWQyNTUxOS1zZWVkLW9mLWV4YWN0bHktMzItYnl0ZXM=" // "ed25519-seed-of-exactly-32-bytes"
)

// secretValues are every secret the tests use; no error or log output may
// contain any of them.
var secretValues = []string{apiSecret, apiSecret2, uiPassword, hmacSecret1, hmacSecret2, edKey,
	strings.TrimPrefix(hmacSecret1, "whsec_"), strings.TrimPrefix(edKey, "whsk_")}

// fakeEnv returns a getenv that looks pairs of name, value up in a map.
func fakeEnv(pairs ...string) func(string) string {
	m := make(map[string]string, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) string { return m[k] }
}

// withAPI is fakeEnv with a valid API client added.
func withAPI(pairs ...string) func(string) string {
	return fakeEnv(append([]string{"SESSIOND_API_KEY", "key1", "SESSIOND_API_SECRET", apiSecret}, pairs...)...)
}

// writeFile writes a YAML file in the test's temporary directory.
func writeFile(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sessiond.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// load loads config from a YAML text (none when empty) and getenv.
func load(t *testing.T, yaml string, getenv func(string) string) (Config, error) {
	t.Helper()
	path := ""
	if yaml != "" {
		path = writeFile(t, yaml)
	}
	return LoadConfig(path, getenv)
}

// assertNoSecrets fails if s contains any test secret.
func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range secretValues {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains secret %q:\n%s", what, secret, s)
		}
	}
}

func defaultConfig(clients ...Client) Config {
	return Config{
		AdminAddr:       "127.0.0.1:8080",
		LogLevel:        "info",
		Clients:         clients,
		SessionTTL:      24 * time.Hour,
		TokenTTL:        30 * time.Minute,
		PurgeAfter:      12 * time.Hour,
		Retention:       720 * time.Hour,
		RecordRetention: 2160 * time.Hour,
		EventsRetention: 168 * time.Hour,
		DeleteLimit:     []RateWindow{{5, time.Hour}, {10, 24 * time.Hour}},
		SweepEvery:      time.Minute,
		ShutdownTimeout: 10 * time.Second,
		UIUser:          "admin",
		Webhook: WebhookConfig{
			Timeout: 15 * time.Second,
			RetrySchedule: []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute,
				2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour},
		},
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml string }{
		{"no file", ""},
		{"empty file", "# nothing\n"},
		{"empty values", "session_ttl: \"\"\nwebhook: {}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := load(t, tc.yaml, withAPI())
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			want := defaultConfig(Client{Key: "key1", Secrets: []string{apiSecret}, Signature: "v2"})
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	t.Parallel()
	yaml := `
redis_url: redis://file:6379/0
admin_addr: ":9000"
log_level: debug
session_ttl: 1h
token_ttl: 10m
delete_limit: [3/1m, 7/1h]
ui_user: ops
ui_password: from-file-password
clients:
  - {key: key1, secret: ` + apiSecret2 + `}
  - {key: key2, secret: ` + apiSecret2 + `}
webhook:
  timeout: 5s
  retry_schedule: 1s,2s
  allow_networks: [10.1.2.3/8]
  endpoints:
    - id: default
      url: https://file.example.com/hook
      secrets: [` + hmacSecret1 + `]
      events: [session.approved]
`
	getenv := fakeEnv(
		"SESSIOND_API_KEY", "key1",
		"SESSIOND_API_SECRET", apiSecret,
		"SESSIOND_SESSION_TTL", "2h",
		"SESSIOND_LOG_LEVEL", "WARN",
		"SESSIOND_DELETE_LIMIT", "1/1s",
		"SESSIOND_UI_PASSWORD", uiPassword,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8, ::1/128",
		"SESSIOND_WEBHOOK_URL", "https://env.example.com/hook",
		"SESSIOND_WEBHOOK_SECRET", hmacSecret2+","+edKey,
	)
	got, err := load(t, yaml, getenv)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := defaultConfig(Client{Key: "key1", Secrets: []string{apiSecret}, Signature: "v2"}, Client{Key: "key2", Secrets: []string{apiSecret2}, Signature: "v2"})
	want.RedisURL = "redis://file:6379/0"
	want.AdminAddr = ":9000"
	want.LogLevel = "warn"
	want.SessionTTL = 2 * time.Hour
	want.TokenTTL = 10 * time.Minute
	want.DeleteLimit = []RateWindow{{1, time.Second}}
	want.UIUser = "ops"
	want.UIPassword = uiPassword
	want.Webhook.Timeout = 5 * time.Second
	want.Webhook.RetrySchedule = []time.Duration{time.Second, 2 * time.Second}
	want.Webhook.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	want.Webhook.Endpoints = []Endpoint{{
		ID:      "default",
		URL:     "https://env.example.com/hook",
		Secrets: []string{hmacSecret2, edKey},
		Events:  []string{"session.approved"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	if len(got.Clients[0].Secrets) != 1 || got.Clients[0].Secrets[0] != apiSecret {
		t.Errorf("client key1 secret not overridden by SESSIOND_API_SECRET")
	}
}

func TestLoadConfigFileOnly(t *testing.T) {
	t.Parallel()
	yaml := `
clients: [{key: only, secret: ` + apiSecret2 + `}]
webhook:
  allow_networks: "10.1.2.3/8"
`
	got, err := load(t, yaml, fakeEnv())
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if want := []Client{{Key: "only", Secrets: []string{apiSecret2}, Signature: "v2"}}; !reflect.DeepEqual(got.Clients, want) {
		t.Errorf("Clients = %v, want %v", got.Clients, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}; !reflect.DeepEqual(got.Webhook.AllowNetworks, want) {
		t.Errorf("AllowNetworks = %v, want %v (masked)", got.Webhook.AllowNetworks, want)
	}
}

func TestLoadConfigMultipleEndpoints(t *testing.T) {
	t.Parallel()
	yaml := `
webhook:
  endpoints:
    - id: crm
      url: https://crm.example.com/h
      secrets: [` + hmacSecret1 + `, ` + hmacSecret2 + `]
      events: [session.approved, session.declined]
    - id: audit_log-2
      url: http://10.0.0.5:8080/in
      secrets: ` + hmacSecret1 + `
      disabled: true
`
	got, err := load(t, yaml, withAPI(
		"SESSIOND_WEBHOOK_URL", "https://main.example.com/",
		"SESSIOND_WEBHOOK_SECRET", hmacSecret1,
	))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := []Endpoint{
		{ID: "default", URL: "https://main.example.com/", Secrets: []string{hmacSecret1}},
		{ID: "crm", URL: "https://crm.example.com/h", Secrets: []string{hmacSecret1, hmacSecret2},
			Events: []string{"session.approved", "session.declined"}},
		{ID: "audit_log-2", URL: "http://10.0.0.5:8080/in", Secrets: []string{hmacSecret1}, Disabled: true},
	}
	if !reflect.DeepEqual(got.Webhook.Endpoints, want) {
		t.Errorf("Endpoints:\ngot  %v\nwant %v", got.Webhook.Endpoints, want)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	endpoint := func(fields string) string {
		return "webhook:\n  endpoints:\n    - {id: a, url: 'https://a.example/', secrets: [" + hmacSecret1 + "]}\n    - {" + fields + "}\n"
	}
	for _, tc := range []struct {
		name   string
		yaml   string
		getenv func(string) string
		want   []string // each must be a line of the error
	}{
		{"env duration", "", withAPI("SESSIOND_SESSION_TTL", "abc"),
			[]string{`config: SESSIOND_SESSION_TTL: invalid duration "abc"`}},
		{"file duration", "token_ttl: 5\n", withAPI(),
			[]string{`config: token_ttl: invalid duration "5"`}},
		{"zero duration", "purge_after: 0s\n", withAPI(),
			[]string{`config: purge_after: duration "0s" must be positive`}},
		{"negative duration", "", withAPI("SESSIOND_RETENTION", "-1h"),
			[]string{`config: SESSIOND_RETENTION: duration "-1h" must be positive`}},
		{"every duration", "", withAPI(
			"SESSIOND_TOKEN_TTL", "0", "SESSIOND_EVENTS_RETENTION", "x", "SESSIOND_SWEEP_EVERY", "0s",
			"SESSIOND_SHUTDOWN_TIMEOUT", "1d", "SESSIOND_WEBHOOK_TIMEOUT", "-5s", "SESSIOND_PURGE_AFTER", "0ms"),
			[]string{
				`config: SESSIOND_TOKEN_TTL: duration "0" must be positive`,
				`config: SESSIOND_PURGE_AFTER: duration "0ms" must be positive`,
				`config: SESSIOND_EVENTS_RETENTION: invalid duration "x"`,
				`config: SESSIOND_SWEEP_EVERY: duration "0s" must be positive`,
				`config: SESSIOND_SHUTDOWN_TIMEOUT: invalid duration "1d"`,
				`config: SESSIOND_WEBHOOK_TIMEOUT: duration "-5s" must be positive`,
			}},
		{"delete limit zero", "", withAPI("SESSIOND_DELETE_LIMIT", "0/1h"),
			[]string{`config: SESSIOND_DELETE_LIMIT: entry 1 "0/1h": limit must be a positive integer`}},
		{"delete limit shape", "delete_limit: [5/1h, 10]\n", withAPI(),
			[]string{`config: delete_limit: entry 2 "10": want N/duration, e.g. 5/1h`}},
		{"retry schedule empty entry", "", withAPI("SESSIOND_WEBHOOK_RETRY_SCHEDULE", "5s,,5m"),
			[]string{`config: SESSIOND_WEBHOOK_RETRY_SCHEDULE: entry 2: invalid duration ""`}},
		{"retry schedule zero", "webhook: {retry_schedule: [5s, 0s]}\n", withAPI(),
			[]string{`config: webhook.retry_schedule: entry 2: duration "0s" must be positive`}},
		{"cidr", "", withAPI("SESSIOND_WEBHOOK_ALLOW_NETWORKS", "10.0.0.0/8,10.0.0.0/33"),
			[]string{`config: SESSIOND_WEBHOOK_ALLOW_NETWORKS: entry 2: invalid CIDR "10.0.0.0/33", want e.g. 10.0.0.0/8`}},
		{"cidr in file", "webhook: {allow_networks: [127.0.0.1]}\n", withAPI(),
			[]string{`config: webhook.allow_networks: entry 1: invalid CIDR "127.0.0.1", want e.g. 10.0.0.0/8`}},
		{"admin addr no port", "", withAPI("SESSIOND_ADMIN_ADDR", "localhost"),
			[]string{`config: SESSIOND_ADMIN_ADDR: want host:port with a numeric port, got "localhost"`}},
		{"admin addr bad port", "admin_addr: 'localhost:99999'\n", withAPI(),
			[]string{`config: admin_addr: want host:port with a numeric port, got "localhost:99999"`}},
		{"log level", "", withAPI("SESSIOND_LOG_LEVEL", "verbose"),
			[]string{`config: SESSIOND_LOG_LEVEL: unknown log level "verbose": want debug, info, warn or error`}},
		{"redis url", "", withAPI("SESSIOND_REDIS_URL", "redis://:"+apiSecret+"@[::1"),
			[]string{`config: SESSIOND_REDIS_URL: redis url: not a URL such as redis://host:6379/0`}},
		{"redis url scheme", "", withAPI("SESSIOND_REDIS_URL", "http://:"+apiSecret+"@redis:6379"),
			[]string{`config: SESSIOND_REDIS_URL: redis url: unknown scheme "http": want redis, rediss, redis-sentinel or redis-cluster`}},
		{"sentinel without master", "", withAPI("SESSIOND_REDIS_URL", "redis-sentinel://:"+apiSecret+"@a:26379,b:26379"),
			[]string{`config: SESSIOND_REDIS_URL: redis url: redis-sentinel:// needs ?master=NAME`}},
		{"ca file without a url", "", withAPI("SESSIOND_REDIS_TLS_CA_FILE", "/etc/ca.pem"),
			[]string{`config: SESSIOND_REDIS_TLS_CA_FILE: set only with a rediss:// SESSIOND_REDIS_URL`}},
		{"record retention under retention", "", withAPI("SESSIOND_RETENTION", "48h", "SESSIOND_RECORD_RETENTION", "24h"),
			[]string{`config: SESSIOND_RECORD_RETENTION: must be at least the retention (48h), got 24h`}},
		{"min replicas", "", withAPI("SESSIOND_REDIS_MIN_REPLICAS", "-1"),
			[]string{`config: SESSIOND_REDIS_MIN_REPLICAS: want a number of replicas from 0 to 16, got "-1"`}},
		{"ui read-only", "", withAPI("SESSIOND_UI_READONLY", "sometimes"),
			[]string{`config: SESSIOND_UI_READONLY: want true or false, got "sometimes"`}},
		{"no client", "", fakeEnv(),
			[]string{`config: SESSIOND_API_KEY: at least one API client is required: set SESSIOND_API_KEY and SESSIOND_API_SECRET, or list clients in the file`}},
		{"api key without secret", "", fakeEnv("SESSIOND_API_KEY", "k"),
			[]string{`config: SESSIOND_API_SECRET: must be set when SESSIOND_API_KEY is set`}},
		{"api secret without key", "", fakeEnv("SESSIOND_API_SECRET", apiSecret),
			[]string{`config: SESSIOND_API_KEY: must be set when SESSIOND_API_SECRET is set`}},
		{"api secret short", "", fakeEnv("SESSIOND_API_KEY", "k", "SESSIOND_API_SECRET", "ui-password-s3c"),
			[]string{`config: SESSIOND_API_SECRET: must be at least 16 characters`}},
		{"api secrets, one short", "", fakeEnv("SESSIOND_API_KEY", "k", "SESSIOND_API_SECRET", apiSecret+",short"),
			[]string{`config: SESSIOND_API_SECRET[1]: must be at least 16 characters`}},
		{"api secrets, one empty", "", fakeEnv("SESSIOND_API_KEY", "k", "SESSIOND_API_SECRET", apiSecret+","),
			[]string{`config: SESSIOND_API_SECRET[1]: must be at least 16 characters`}},
		{"api signature", "", withAPI("SESSIOND_API_SIGNATURE", "v3"),
			[]string{`config: SESSIOND_API_SIGNATURE: unknown signature scheme "v3": want v2 or legacy`}},
		{"file client signature", "clients:\n  - {key: a, secret: " + apiSecret + ", signature: hmac}\n", fakeEnv(),
			[]string{`config: clients[0].signature: unknown signature scheme "hmac": want v2 or legacy`}},
		{"file client", "clients:\n  - {key: a, secret: " + apiSecret + "}\n  - {key: 'b c', secret: short}\n  - {key: a, secret: " + apiSecret2 + "}\n", fakeEnv(),
			[]string{
				`config: clients[1].key: must be 1 to 256 visible ASCII characters`,
				`config: clients[1].secret: must be at least 16 characters`,
				`config: clients[2].key: duplicate key "a" (also clients[0].key)`,
			}},
		{"endpoint url", endpoint("id: b, url: 'ftp://b.example/', secrets: [" + hmacSecret1 + "]"), withAPI(),
			[]string{`config: webhook.endpoints[1].url: must be an absolute http or https URL`}},
		{"endpoint relative url", endpoint("id: b, url: '/hook', secrets: [" + hmacSecret1 + "]"), withAPI(),
			[]string{`config: webhook.endpoints[1].url: must be an absolute http or https URL`}},
		{"endpoint id", endpoint("id: B!, url: 'https://b.example/', secrets: [" + hmacSecret1 + "]"), withAPI(),
			[]string{`config: webhook.endpoints[1].id: want 1 to 64 characters from [a-z0-9_-], got "B!"`}},
		{"endpoint id duplicate", endpoint("id: a, url: 'https://b.example/', secrets: [" + hmacSecret1 + "]"), withAPI(),
			[]string{`config: webhook.endpoints[1].id: duplicate id "a" (also webhook.endpoints[0].id)`}},
		{"endpoint no secret", endpoint("id: b, url: 'https://b.example/'"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets: at least one whsec_ secret is required`}},
		{"endpoint only ed25519", endpoint("id: b, url: 'https://b.example/', secrets: [" + edKey + "]"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets: at least one whsec_ secret is required`}},
		{"endpoint secret prefix", endpoint("id: b, url: 'https://b.example/', secrets: [" + hmacSecret1 + ", " + apiSecret + "]"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets[1]: must start with whsec_ or whsk_`}},
		{"endpoint secret base64", endpoint("id: b, url: 'https://b.example/', secrets: ['whsec_" + apiSecret + "']"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets: parse key: invalid key: whsec_ secret is not valid base64`}},
		{"endpoint secret short", endpoint("id: b, url: 'https://b.example/', secrets: [whsec_c2hvcnQ=]"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets: parse key: invalid key: whsec_ secret must decode to at least 24 bytes`}},
		{"endpoint public key", endpoint("id: b, url: 'https://b.example/', secrets: [" + hmacSecret1 + ", 'whpk_" + strings.TrimPrefix(edKey, "whsk_") + "']"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets[1]: whpk_ is a public key: configure the whsk_ private key here`}},
		{"endpoint ed25519 length", endpoint("id: b, url: 'https://b.example/', secrets: [" + hmacSecret1 + ", '" + strings.Replace(hmacSecret2, "whsec_", "whsk_", 1) + "']"), withAPI(),
			[]string{`config: webhook.endpoints[1].secrets[1]: parse key: invalid key: whsk_ key must decode to 32 or 64 bytes`}},
		{"endpoint event", endpoint("id: b, url: 'https://b.example/', secrets: [" + hmacSecret1 + "], events: [session.approved, session.approve]"), withAPI(),
			[]string{`config: webhook.endpoints[1].events[1]: unknown event "session.approve"`}},
		{"env webhook secret", "", withAPI("SESSIOND_WEBHOOK_URL", "https://x.example/", "SESSIOND_WEBHOOK_SECRET", apiSecret),
			[]string{`config: SESSIOND_WEBHOOK_SECRET: must start with whsec_ or whsk_`}},
		{"env webhook secrets", "", withAPI("SESSIOND_WEBHOOK_URL", "https://x.example/", "SESSIOND_WEBHOOK_SECRET", hmacSecret1+",whsec_"+apiSecret),
			[]string{`config: SESSIOND_WEBHOOK_SECRET[1]: parse key: invalid key: whsec_ secret is not valid base64`}},
		{"env webhook secret without url", "", withAPI("SESSIOND_WEBHOOK_SECRET", hmacSecret1),
			[]string{`config: SESSIOND_WEBHOOK_URL: must be an absolute http or https URL`}},
		{"env webhook url without secret", "", withAPI("SESSIOND_WEBHOOK_URL", "https://x.example/"),
			[]string{`config: SESSIOND_WEBHOOK_SECRET: at least one whsec_ secret is required`}},
		{"env overrides file endpoint", endpoint("id: default, url: 'https://b.example/', secrets: [" + hmacSecret1 + "]"),
			withAPI("SESSIOND_WEBHOOK_URL", "mailto:x@example.com"),
			[]string{`config: SESSIOND_WEBHOOK_URL: must be an absolute http or https URL`}},
		{"all at once", "session_ttl: nope\n", fakeEnv("SESSIOND_LOG_LEVEL", "loud", "SESSIOND_WEBHOOK_URL", "x"),
			[]string{
				`config: SESSIOND_LOG_LEVEL: unknown log level "loud": want debug, info, warn or error`,
				`config: SESSIOND_API_KEY: at least one API client is required: set SESSIOND_API_KEY and SESSIOND_API_SECRET, or list clients in the file`,
				`config: session_ttl: invalid duration "nope"`,
				`config: SESSIOND_WEBHOOK_URL: must be an absolute http or https URL`,
				`config: SESSIOND_WEBHOOK_SECRET: at least one whsec_ secret is required`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := load(t, tc.yaml, tc.getenv)
			if err == nil {
				t.Fatalf("LoadConfig succeeded, want errors %q", tc.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if !reflect.DeepEqual(lines, tc.want) {
				t.Errorf("error lines:\ngot  %q\nwant %q", lines, tc.want)
			}
			assertNoSecrets(t, "error", err.Error())
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("LoadConfig returned a non-zero Config with its error")
			}
		})
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown key", "sesion_ttl: 1h\n", []string{"line 1: field sesion_ttl not found"}},
		{"unknown nested key", "webhook:\n  endpoints:\n    - id: a\n      secret: " + hmacSecret1 + "\n",
			[]string{"line 4: field secret not found"}},
		{"unknown client key", "clients:\n  - {key: a, secrett: " + apiSecret + "}\n",
			[]string{"field secrett not found"}},
		{"wrong type with a secret", "clients: " + apiSecret + "\n",
			[]string{"line 1: cannot unmarshal !!str into a list"}},
		{"wrong type in list", "webhook: {endpoints: [{id: a, secrets: [[" + hmacSecret1 + "]]}]}\n",
			[]string{"want a string or a list of strings"}},
		{"syntax", "session_ttl: [\n", []string{"yaml: line"}},
		{"two documents", "session_ttl: 1h\n---\nsession_ttl: 2h\n", []string{"want one YAML document, found more"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, tc.yaml)
			_, err := LoadConfig(path, withAPI())
			if err == nil {
				t.Fatalf("LoadConfig succeeded, want an error")
			}
			msg := err.Error()
			for _, want := range append(tc.want, "config: "+path+": ") {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if strings.Contains(msg, "main.") {
				t.Errorf("error %q names a Go type", msg)
			}
			assertNoSecrets(t, "error", msg)
		})
	}

	_, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"), withAPI())
	if err == nil || !strings.Contains(err.Error(), "config: read file: ") {
		t.Errorf("missing file: got %v, want a read file error", err)
	}
}

func TestParseRateWindows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    []RateWindow
		wantErr string
	}{
		{"5/1h,10/24h", []RateWindow{{5, time.Hour}, {10, 24 * time.Hour}}, ""},
		{" 1/90s , 2/1h30m ", []RateWindow{{1, 90 * time.Second}, {2, 90 * time.Minute}}, ""},
		{"+3/1.5h", []RateWindow{{3, 90 * time.Minute}}, ""},
		{"", nil, "want at least one N/duration window"},
		{"5", nil, `entry 1 "5": want N/duration`},
		{"5/1h,", nil, `entry 2 "": want N/duration`},
		{"-1/1h", nil, "limit must be a positive integer"},
		{"99999999999999999999/1h", nil, "limit must be a positive integer"},
		{"1/0", nil, `duration "0" must be positive`},
		{"1/h", nil, `invalid duration "h"`},
		{"1/1h/2", nil, `invalid duration "1h/2"`},
	} {
		got, err := parseRateWindows(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseRateWindows(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseRateWindows(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if got, want := formatRateWindows([]RateWindow{{5, time.Hour}, {10, 24 * time.Hour}, {1, 90 * time.Second}}), "5/1h,10/24h,1/1m30s"; got != want {
		t.Errorf("formatRateWindows = %q, want %q", got, want)
	}
}

func FuzzParseRateWindows(f *testing.F) {
	for _, s := range []string{"5/1h,10/24h", "1/1ns", "+3/1.5h", "5/", "/1h", "1/1h,,", "9223372036854775807/2562047h47m16.854775807s", "1/-0s", "1/1e3s", " 2 / 3m "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ws, err := parseRateWindows(s)
		if err != nil {
			return
		}
		if len(ws) == 0 {
			t.Fatalf("parseRateWindows(%q) returned no windows and no error", s)
		}
		for _, w := range ws {
			if w.Limit <= 0 || w.Window <= 0 {
				t.Fatalf("parseRateWindows(%q) returned a non-positive window %+v", s, w)
			}
		}
		text := formatRateWindows(ws)
		again, err := parseRateWindows(text)
		if err != nil {
			t.Fatalf("parseRateWindows(formatRateWindows(%v) = %q): %v", ws, text, err)
		}
		if !reflect.DeepEqual(again, ws) {
			t.Fatalf("round trip of %q via %q: got %v, want %v", s, text, again, ws)
		}
	})
}

func TestParseDurations(t *testing.T) {
	t.Parallel()
	got, err := parseDurations("5s, 5m,30m,2h,5h,10h,10h")
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseDurations = %v, %v; want %v", got, err, want)
	}
	for _, in := range []string{"", " ", "5s,", "5s,0s", "1d"} {
		if got, err := parseDurations(in); err == nil {
			t.Errorf("parseDurations(%q) = %v, want an error", in, got)
		}
	}
}

func TestShortDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		time.Hour:                        "1h",
		24 * time.Hour:                   "24h",
		90 * time.Minute:                 "1h30m",
		time.Hour + time.Second:          "1h0m1s",
		10 * time.Minute:                 "10m",
		90 * time.Second:                 "1m30s",
		5 * time.Second:                  "5s",
		1500 * time.Millisecond:          "1.5s",
		time.Hour + 500*time.Millisecond: "1h0m0.5s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestConfigLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	yaml := `
redis_url: redis://user:` + apiSecret2 + `@redis.internal:6379/0
clients: [{key: key2, secret: ` + apiSecret2 + `}]
webhook:
  endpoints:
    - id: crm
      url: https://hook:` + uiPassword + `x@crm.example.com/h
      secrets: [` + hmacSecret1 + `, ` + edKey + `]
`
	cfg, err := load(t, yaml, withAPI(
		"SESSIOND_UI_PASSWORD", uiPassword,
		"SESSIOND_WEBHOOK_URL", "https://main.example.com/in",
		"SESSIOND_WEBHOOK_SECRET", hmacSecret2,
	))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "config", cfg, "client", cfg.Clients[0], "endpoint", cfg.Webhook.Endpoints[0])
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "config", cfg, "clients", cfg.Clients, "endpoint", cfg.Webhook.Endpoints[1])
	outputs := map[string]string{
		"text handler": text.String(),
		"JSON handler": js.String(),
		"fmt":          fmt.Sprintf("%v|%+v|%#v|%s|%q", cfg, cfg, cfg, cfg, cfg),
		"fmt parts":    fmt.Sprintf("%v|%+v|%#v|%v|%+v|%#v", cfg.Clients, cfg.Webhook, cfg.Webhook.Endpoints, cfg.Clients[1], cfg.Webhook.Endpoints[1], cfg.Clients[0]),
	}
	for what, out := range outputs {
		assertNoSecrets(t, what, out)
	}
	for _, want := range []string{"client_keys=key2,key1", "https://main.example.com/in", "https://hook:xxxxx@crm.example.com/h",
		"redis://user:xxxxx@redis.internal:6379/0", "events=all", "ui_password_set=true", "whsec_secrets=1", "whsk_keys=1",
		"delete_limit=5/1h,10/24h", "session_ttl=24h"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text log lacks %q:\n%s", want, text.String())
		}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	assertNoSecrets(t, "json.Marshal", string(b))
	if !strings.Contains(string(b), `"client_keys":"key2,key1"`) {
		t.Errorf("json.Marshal(cfg) = %s, want client keys", b)
	}
}

func TestConfigLevel(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got := (Config{LogLevel: name}).Level(); got != want {
			t.Errorf("Level(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestExampleConfig keeps configs/sessiond.example.yaml loadable and its
// documented defaults true.
func TestExampleConfig(t *testing.T) {
	t.Parallel()
	got, err := LoadConfig(filepath.Join("..", "..", "configs", "sessiond.example.yaml"), withAPI())
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(got.Webhook.Endpoints) != 1 {
		t.Fatalf("example config has %d endpoints, want 1", len(got.Webhook.Endpoints))
	}
	ep := got.Webhook.Endpoints[0]
	if len(ep.Secrets) != 2 || len(ep.Events) == 0 || !ep.Disabled {
		t.Errorf("example endpoint = %v, want two secrets, an event filter and disabled", ep)
	}
	for _, s := range ep.Secrets {
		b, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if !strings.HasPrefix(string(b), "replace-me-") {
			t.Errorf("example secret decodes to %q, want an obvious replace-me- placeholder", b)
		}
	}
	got.Webhook.Endpoints = nil
	if want := defaultConfig(Client{Key: "key1", Secrets: []string{apiSecret}, Signature: "v2"}); !reflect.DeepEqual(got, want) {
		t.Errorf("example config values differ from the defaults:\ngot  %v\nwant %v", got, want)
	}
}

// TestLoadConfigClientRotationAndLegacy: a client may list several secrets
// (a rotation) and sign with the legacy scheme, from the file or the
// environment.
func TestLoadConfigClientRotationAndLegacy(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `
clients:
  - {key: backoffice, secret: [`+apiSecret+`, `+apiSecret2+`]}
  - {key: veriff, secret: `+apiSecret+`, signature: legacy}
`)
	got, err := LoadConfig(path, fakeEnv("SESSIOND_API_KEY", "env", "SESSIOND_API_SECRET", apiSecret2+", "+apiSecret, "SESSIOND_API_SIGNATURE", "legacy"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Client{
		{Key: "backoffice", Secrets: []string{apiSecret, apiSecret2}, Signature: "v2"},
		{Key: "veriff", Secrets: []string{apiSecret}, Signature: "legacy"},
		{Key: "env", Secrets: []string{apiSecret2, apiSecret}, Signature: "legacy"},
	}
	if !reflect.DeepEqual(got.Clients, want) {
		t.Errorf("clients = %v, want %v", got.Clients, want)
	}
	assertNoSecrets(t, "String", got.String())
}
