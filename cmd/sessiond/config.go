package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/signing"
)

// Config is everything sessiond reads from its YAML file and environment.
//
// LoadConfig fills every field: defaults replace zero values, so a Config it
// returns needs no further checks. Secrets (client secrets, webhook secrets,
// the UI password) never appear in its String, GoString or LogValue output.
type Config struct {
	RedisURL        string        // SESSIOND_REDIS_URL; empty => start a private redis-server (see localredis.go)
	RedisCAFile     string        // SESSIOND_REDIS_TLS_CA_FILE: CA certificates of a rediss:// Redis (PEM)
	MinReplicas     int           // SESSIOND_REDIS_MIN_REPLICAS, default 0: replicas a state change waits for (WAIT)
	AdminAddr       string        // SESSIOND_ADMIN_ADDR, default "127.0.0.1:8080"
	LogLevel        string        // SESSIOND_LOG_LEVEL: debug|info|warn|error, default info
	Clients         []Client      // API clients; SESSIOND_API_KEY + SESSIOND_API_SECRET add/override one; YAML `clients:`
	SessionTTL      time.Duration // SESSIOND_SESSION_TTL, default 24h
	TokenTTL        time.Duration // SESSIOND_TOKEN_TTL, default 30m
	PurgeAfter      time.Duration // SESSIOND_PURGE_AFTER, default 12h
	Retention       time.Duration // SESSIOND_RETENTION, default 720h: personal data of terminal sessions
	RecordRetention time.Duration // SESSIOND_RECORD_RETENTION, default 2160h, at least Retention: their non-personal record
	EventsRetention time.Duration // SESSIOND_EVENTS_RETENTION, default 168h
	DeleteLimit     []RateWindow  // SESSIOND_DELETE_LIMIT, default "5/1h,10/24h"
	SweepEvery      time.Duration // SESSIOND_SWEEP_EVERY, default 1m
	ShutdownTimeout time.Duration // SESSIOND_SHUTDOWN_TIMEOUT, default 10s
	DrainDelay      time.Duration // SESSIOND_SHUTDOWN_DRAIN_DELAY, default 0: /readyz is 503 this long after SIGTERM before anything stops
	UIUser          string        // SESSIOND_UI_USER, default "admin"
	UIPassword      string        // SESSIOND_UI_PASSWORD; empty => no /ui/ at all
	UIReadOnly      bool          // SESSIOND_UI_READONLY: the UI shows but cannot change
	Pprof           bool          // SESSIOND_PPROF: /debug/pprof/ on the admin port
	Webhook         WebhookConfig
}

// Client is one API client of the admin API: X-AUTH-CLIENT carries Key,
// X-HMAC-SIGNATURE is keyed with any of Secrets (several during a
// rotation). Signature is the signing scheme: "v2" (the default) or
// "legacy" (Veriff's: replayable, for integrations moving from it).
type Client struct {
	Key       string
	Secrets   []string
	Signature string
}

// RateWindow allows at most Limit operations per sliding Window.
type RateWindow struct {
	Limit  int
	Window time.Duration
}

// WebhookConfig configures webhook delivery.
type WebhookConfig struct {
	Timeout       time.Duration   // SESSIOND_WEBHOOK_TIMEOUT, default 15s
	RetrySchedule []time.Duration // SESSIOND_WEBHOOK_RETRY_SCHEDULE, default "5s,5m,30m,2h,5h,10h,10h"
	AllowNetworks []netip.Prefix  // SESSIOND_WEBHOOK_ALLOW_NETWORKS, comma-separated CIDRs, default none
	Endpoints     []Endpoint      // SESSIOND_WEBHOOK_URL + SESSIOND_WEBHOOK_SECRET define endpoint "default"; YAML adds more
}

// Endpoint is one webhook receiver.
type Endpoint struct {
	ID       string   // unique, [a-z0-9_-]{1,64}
	URL      string   // absolute http(s) URL
	Secrets  []string // whsec_... (one or more, rotation) and/or whsk_... ed25519 private keys; at least one whsec_
	Events   []string // event type filter, empty = all
	Disabled bool
}

// Defaults, applied for zero values.
const (
	defaultAdminAddr       = "127.0.0.1:8080"
	defaultLogLevel        = "info"
	defaultSessionTTL      = 24 * time.Hour
	defaultTokenTTL        = 30 * time.Minute
	defaultPurgeAfter      = 12 * time.Hour
	defaultRetention       = 720 * time.Hour
	defaultRecordRetention = 2160 * time.Hour
	defaultEventsRetention = 168 * time.Hour
	defaultDeleteLimit     = "5/1h,10/24h"
	defaultSweepEvery      = time.Minute
	defaultShutdownTimeout = 10 * time.Second
	defaultUIUser          = "admin"
	defaultWebhookTimeout  = 15 * time.Second
	defaultRetrySchedule   = "5s,5m,30m,2h,5h,10h,10h"

	// defaultEndpointID names the endpoint SESSIOND_WEBHOOK_URL defines.
	defaultEndpointID = "default"
	// minClientSecretLen is the shortest API client secret accepted, in characters.
	minClientSecretLen = 16
)

// fileConfig is the YAML form of Config. Every scalar is a string so that
// LoadConfig parses file and environment values alike and names the field
// that is wrong.
type fileConfig struct {
	RedisURL        string       `yaml:"redis_url"`
	RedisCAFile     string       `yaml:"redis_tls_ca_file"`
	MinReplicas     string       `yaml:"redis_min_replicas"`
	AdminAddr       string       `yaml:"admin_addr"`
	LogLevel        string       `yaml:"log_level"`
	Clients         []fileClient `yaml:"clients"`
	SessionTTL      string       `yaml:"session_ttl"`
	TokenTTL        string       `yaml:"token_ttl"`
	PurgeAfter      string       `yaml:"purge_after"`
	Retention       string       `yaml:"retention"`
	RecordRetention string       `yaml:"record_retention"`
	EventsRetention string       `yaml:"events_retention"`
	DeleteLimit     commaList    `yaml:"delete_limit"`
	SweepEvery      string       `yaml:"sweep_every"`
	ShutdownTimeout string       `yaml:"shutdown_timeout"`
	ShutdownDrain   string       `yaml:"shutdown_drain_delay"`
	UIUser          string       `yaml:"ui_user"`
	UIPassword      string       `yaml:"ui_password"`
	UIReadOnly      string       `yaml:"ui_readonly"`
	Pprof           string       `yaml:"pprof"`
	Webhook         fileWebhook  `yaml:"webhook"`
}

type fileClient struct {
	Key       string    `yaml:"key"`
	Secret    commaList `yaml:"secret"`
	Signature string    `yaml:"signature"`
}

type fileWebhook struct {
	Timeout       string         `yaml:"timeout"`
	RetrySchedule commaList      `yaml:"retry_schedule"`
	AllowNetworks commaList      `yaml:"allow_networks"`
	Endpoints     []fileEndpoint `yaml:"endpoints"`
}

type fileEndpoint struct {
	ID       string    `yaml:"id"`
	URL      string    `yaml:"url"`
	Secrets  commaList `yaml:"secrets"`
	Events   commaList `yaml:"events"`
	Disabled bool      `yaml:"disabled"`
}

// commaList is a YAML value written either as one comma-separated string,
// like its environment variable, or as a list of strings. It holds the
// comma-separated form.
type commaList string

// UnmarshalYAML implements yaml.Unmarshaler. Its errors never quote the
// value, which may be a secret.
func (c *commaList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*c = commaList(n.Value)
		return nil
	case yaml.SequenceNode:
		items := make([]string, len(n.Content))
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: want a string or a list of strings", item.Line)
			}
			items[i] = item.Value
		}
		*c = commaList(strings.Join(items, ","))
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

// LoadConfig reads the YAML file at path (none when path is empty), lets every
// non-empty SESSIOND_* variable from getenv override it, applies defaults and
// validates the result. The error lists every invalid field at once, each
// named as the variable or YAML key it came from; it never contains a secret.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	var fc fileConfig
	if path != "" {
		if err := readConfigFile(path, &fc); err != nil {
			return Config{}, err
		}
	}
	l := &loader{getenv: getenv}
	cfg := Config{
		RedisURL:        l.redisURL(fc.RedisURL, fc.RedisCAFile),
		RedisCAFile:     l.value("SESSIOND_REDIS_TLS_CA_FILE", "redis_tls_ca_file", fc.RedisCAFile, "").val,
		MinReplicas:     l.minReplicas(fc.MinReplicas),
		AdminAddr:       l.adminAddr(fc.AdminAddr),
		LogLevel:        l.logLevel(fc.LogLevel),
		Clients:         l.clients(fc.Clients),
		SessionTTL:      l.duration("SESSIOND_SESSION_TTL", "session_ttl", fc.SessionTTL, defaultSessionTTL),
		TokenTTL:        l.duration("SESSIOND_TOKEN_TTL", "token_ttl", fc.TokenTTL, defaultTokenTTL),
		PurgeAfter:      l.duration("SESSIOND_PURGE_AFTER", "purge_after", fc.PurgeAfter, defaultPurgeAfter),
		Retention:       l.duration("SESSIOND_RETENTION", "retention", fc.Retention, defaultRetention),
		RecordRetention: l.duration("SESSIOND_RECORD_RETENTION", "record_retention", fc.RecordRetention, defaultRecordRetention),
		EventsRetention: l.duration("SESSIOND_EVENTS_RETENTION", "events_retention", fc.EventsRetention, defaultEventsRetention),
		DeleteLimit:     l.deleteLimit(string(fc.DeleteLimit)),
		SweepEvery:      l.duration("SESSIOND_SWEEP_EVERY", "sweep_every", fc.SweepEvery, defaultSweepEvery),
		ShutdownTimeout: l.duration("SESSIOND_SHUTDOWN_TIMEOUT", "shutdown_timeout", fc.ShutdownTimeout, defaultShutdownTimeout),
		DrainDelay:      l.delay("SESSIOND_SHUTDOWN_DRAIN_DELAY", "shutdown_drain_delay", fc.ShutdownDrain),
		UIUser:          l.value("SESSIOND_UI_USER", "ui_user", fc.UIUser, defaultUIUser).val,
		UIPassword:      l.value("SESSIOND_UI_PASSWORD", "ui_password", fc.UIPassword, "").val,
		UIReadOnly:      l.boolean("SESSIOND_UI_READONLY", "ui_readonly", fc.UIReadOnly),
		Pprof:           l.boolean("SESSIOND_PPROF", "pprof", fc.Pprof),
		Webhook: WebhookConfig{
			Timeout:       l.duration("SESSIOND_WEBHOOK_TIMEOUT", "webhook.timeout", fc.Webhook.Timeout, defaultWebhookTimeout),
			RetrySchedule: l.retrySchedule(string(fc.Webhook.RetrySchedule)),
			AllowNetworks: l.allowNetworks(string(fc.Webhook.AllowNetworks)),
			Endpoints:     l.endpoints(fc.Webhook.Endpoints),
		},
	}
	if cfg.RecordRetention < cfg.Retention {
		src := l.value("SESSIOND_RECORD_RETENTION", "record_retention", fc.RecordRetention, "").src
		l.failf(src, "must be at least the retention (%s), got %s", shortDuration(cfg.Retention), shortDuration(cfg.RecordRetention))
	}
	if err := errors.Join(l.errs...); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// readConfigFile decodes the YAML file at path into fc, refusing unknown keys.
func readConfigFile(path string, fc *fileConfig) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: read file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(fc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %s", path, yamlErrorText(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: want one YAML document, found more", path)
	}
	return nil
}

// yamlErrorText is err's message with any quoted value removed (it may be a
// secret) and this package's Go type names replaced by what they mean to an
// operator.
func yamlErrorText(err error) string {
	msg := err.Error()
	for _, r := range []struct{ re, with string }{
		{" `[^`]*`", ""},
		{` in type main\.\w+`, ""},
		{`\[\]main\.\w+`, "a list"},
		{`main\.\w+`, "a mapping"},
	} {
		msg = regexp.MustCompile(r.re).ReplaceAllString(msg, r.with)
	}
	return msg
}

// loader picks each setting from the environment or the file and collects
// every validation error.
type loader struct {
	getenv func(string) string
	errs   []error
}

// sourced is a raw setting and the name of where it came from: an environment
// variable or a YAML key path.
type sourced struct {
	val, src string
}

// failf records that the setting from src is invalid.
func (l *loader) failf(src, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("config: %s: %s", src, fmt.Sprintf(format, args...)))
}

// value returns env's value if set, else the file's value from key, else def.
func (l *loader) value(env, key, fileVal, def string) sourced {
	if v := l.getenv(env); v != "" {
		return sourced{v, env}
	}
	if fileVal != "" {
		return sourced{fileVal, key}
	}
	return sourced{def, env}
}

func (l *loader) duration(env, key, fileVal string, def time.Duration) time.Duration {
	s := l.value(env, key, fileVal, "")
	if s.val == "" {
		return def
	}
	d, err := parsePositiveDuration(s.val)
	if err != nil {
		l.failf(s.src, "%v", err)
		return def
	}
	return d
}

// boolean is a true/false setting, false by default.
func (l *loader) boolean(env, key, fileVal string) bool {
	s := l.value(env, key, fileVal, "false")
	b, err := strconv.ParseBool(strings.TrimSpace(s.val))
	if err != nil {
		l.failf(s.src, "want true or false, got %q", s.val)
	}
	return b
}

// delay is duration for a setting whose default, 0, means none.
func (l *loader) delay(env, key, fileVal string) time.Duration {
	s := l.value(env, key, fileVal, "")
	if s.val == "" {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(s.val))
	switch {
	case err != nil:
		l.failf(s.src, "invalid duration %q", s.val)
	case d < 0:
		l.failf(s.src, "duration %q must not be negative", s.val)
	default:
		return d
	}
	return 0
}

func (l *loader) redisURL(fileVal, fileCA string) string {
	s := l.value("SESSIOND_REDIS_URL", "redis_url", fileVal, "")
	ca := l.value("SESSIOND_REDIS_TLS_CA_FILE", "redis_tls_ca_file", fileCA, "")
	if s.val == "" {
		if ca.val != "" {
			l.failf(ca.src, "set only with a rediss:// SESSIOND_REDIS_URL")
		}
		return ""
	}
	// The URL may hold a password: redisconn's errors never quote it.
	if _, err := redisconn.Parse(s.val, redisconn.Options{CAFile: ca.val}); err != nil {
		l.failf(s.src, "%v", err)
	}
	return s.val
}

func (l *loader) minReplicas(fileVal string) int {
	s := l.value("SESSIOND_REDIS_MIN_REPLICAS", "redis_min_replicas", fileVal, "0")
	n, err := strconv.Atoi(strings.TrimSpace(s.val))
	if err != nil || n < 0 || n > 16 {
		l.failf(s.src, "want a number of replicas from 0 to 16, got %q", s.val)
		return 0
	}
	return n
}

func (l *loader) adminAddr(fileVal string) string {
	s := l.value("SESSIOND_ADMIN_ADDR", "admin_addr", fileVal, defaultAdminAddr)
	_, port, err := net.SplitHostPort(s.val)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		l.failf(s.src, "want host:port with a numeric port, got %q", s.val)
	}
	return s.val
}

func (l *loader) logLevel(fileVal string) string {
	s := l.value("SESSIOND_LOG_LEVEL", "log_level", fileVal, defaultLogLevel)
	v := strings.ToLower(strings.TrimSpace(s.val))
	switch v {
	case "debug", "info", "warn", "error":
		return v
	}
	l.failf(s.src, "unknown log level %q: want debug, info, warn or error", s.val)
	return defaultLogLevel
}

func (l *loader) deleteLimit(fileVal string) []RateWindow {
	s := l.value("SESSIOND_DELETE_LIMIT", "delete_limit", fileVal, defaultDeleteLimit)
	ws, err := parseRateWindows(s.val)
	if err != nil {
		l.failf(s.src, "%v", err)
	}
	return ws
}

func (l *loader) retrySchedule(fileVal string) []time.Duration {
	s := l.value("SESSIOND_WEBHOOK_RETRY_SCHEDULE", "webhook.retry_schedule", fileVal, defaultRetrySchedule)
	ds, err := parseDurations(s.val)
	if err != nil {
		l.failf(s.src, "%v", err)
	}
	return ds
}

func (l *loader) allowNetworks(fileVal string) []netip.Prefix {
	s := l.value("SESSIOND_WEBHOOK_ALLOW_NETWORKS", "webhook.allow_networks", fileVal, "")
	ps, err := parsePrefixes(s.val)
	if err != nil {
		l.failf(s.src, "%v", err)
	}
	return ps
}

// clients returns the file's clients with SESSIOND_API_KEY/SESSIOND_API_SECRET
// replacing the secret of the client with that key, or added as a new one.
func (l *loader) clients(fileClients []fileClient) []Client {
	type src struct{ key, secret, signature string }
	var (
		cs   []Client
		srcs []src
	)
	for i, fc := range fileClients {
		cs = append(cs, Client{Key: fc.Key, Secrets: splitList(string(fc.Secret)), Signature: fc.Signature})
		p := fmt.Sprintf("clients[%d].", i)
		srcs = append(srcs, src{p + "key", p + "secret", p + "signature"})
	}
	envKey, envSecret := l.getenv("SESSIOND_API_KEY"), l.getenv("SESSIOND_API_SECRET")
	switch {
	case envKey != "" && envSecret != "":
		i := 0
		for i < len(cs) && cs[i].Key != envKey {
			i++
		}
		if i == len(cs) {
			cs = append(cs, Client{Key: envKey})
			srcs = append(srcs, src{key: "SESSIOND_API_KEY"})
		}
		cs[i].Secrets = splitList(envSecret)
		srcs[i].secret = "SESSIOND_API_SECRET"
		if sig := l.getenv("SESSIOND_API_SIGNATURE"); sig != "" {
			cs[i].Signature, srcs[i].signature = sig, "SESSIOND_API_SIGNATURE"
		}
	case envKey != "":
		l.failf("SESSIOND_API_SECRET", "must be set when SESSIOND_API_KEY is set")
	case envSecret != "":
		l.failf("SESSIOND_API_KEY", "must be set when SESSIOND_API_SECRET is set")
	}
	if len(cs) == 0 && envKey == "" && envSecret == "" {
		l.failf("SESSIOND_API_KEY", "at least one API client is required: set SESSIOND_API_KEY and SESSIOND_API_SECRET, or list clients in the file")
	}
	seen := make(map[string]string, len(cs))
	for i, c := range cs {
		if !validClientKey(c.Key) {
			l.failf(srcs[i].key, "must be 1 to 256 visible ASCII characters")
		} else if first, dup := seen[c.Key]; dup {
			l.failf(srcs[i].key, "duplicate key %q (also %s)", c.Key, first)
		} else {
			seen[c.Key] = srcs[i].key
		}
		if len(c.Secrets) == 0 {
			l.failf(srcs[i].secret, "at least one secret is required")
		}
		for j, secret := range c.Secrets {
			name := srcs[i].secret
			if len(c.Secrets) > 1 {
				name = fmt.Sprintf("%s[%d]", name, j)
			}
			if err := checkClientSecret(secret); err != nil {
				l.failf(name, "%v", err)
			}
		}
		switch cs[i].Signature {
		case "":
			cs[i].Signature = "v2"
		case "v2", "legacy":
		default:
			l.failf(srcs[i].signature, "unknown signature scheme %q: want v2 or legacy", c.Signature)
		}
	}
	return cs
}

// endpoints returns the file's endpoints with SESSIOND_WEBHOOK_URL and
// SESSIOND_WEBHOOK_SECRET overriding the endpoint "default", which is added
// first when the file has none.
func (l *loader) endpoints(fileEndpoints []fileEndpoint) []Endpoint {
	type src struct{ id, url, secrets, events string }
	var (
		eps  []Endpoint
		srcs []src
	)
	for i, fe := range fileEndpoints {
		eps = append(eps, Endpoint{
			ID:       fe.ID,
			URL:      fe.URL,
			Secrets:  splitList(string(fe.Secrets)),
			Events:   splitList(string(fe.Events)),
			Disabled: fe.Disabled,
		})
		p := fmt.Sprintf("webhook.endpoints[%d].", i)
		srcs = append(srcs, src{p + "id", p + "url", p + "secrets", p + "events"})
	}
	envURL, envSecret := l.getenv("SESSIOND_WEBHOOK_URL"), l.getenv("SESSIOND_WEBHOOK_SECRET")
	if envURL != "" || envSecret != "" {
		i := 0
		for i < len(eps) && eps[i].ID != defaultEndpointID {
			i++
		}
		if i == len(eps) {
			eps = append([]Endpoint{{ID: defaultEndpointID}}, eps...)
			srcs = append([]src{{id: "SESSIOND_WEBHOOK_URL", url: "SESSIOND_WEBHOOK_URL", secrets: "SESSIOND_WEBHOOK_SECRET"}}, srcs...)
			i = 0
		}
		if envURL != "" {
			eps[i].URL, srcs[i].url = envURL, "SESSIOND_WEBHOOK_URL"
		}
		if envSecret != "" {
			eps[i].Secrets, srcs[i].secrets = splitList(envSecret), "SESSIOND_WEBHOOK_SECRET"
		}
	}
	seen := make(map[string]string, len(eps))
	for i, ep := range eps {
		s := srcs[i]
		if !validEndpointID(ep.ID) {
			l.failf(s.id, "want 1 to 64 characters from [a-z0-9_-], got %q", ep.ID)
		} else if first, dup := seen[ep.ID]; dup {
			l.failf(s.id, "duplicate id %q (also %s)", ep.ID, first)
		} else {
			seen[ep.ID] = s.id
		}
		// The URL may carry credentials: never quote it.
		if u, err := url.Parse(ep.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.failf(s.url, "must be an absolute http or https URL")
		}
		hmacKeys, bad := 0, 0
		for j, secret := range ep.Secrets {
			name := s.secrets
			if len(ep.Secrets) > 1 {
				name = fmt.Sprintf("%s[%d]", s.secrets, j)
			}
			switch isHMAC, err := checkWebhookSecret(secret); {
			case err != nil:
				l.failf(name, "%v", err)
				bad++
			case isHMAC:
				hmacKeys++
			}
		}
		if hmacKeys == 0 && bad == 0 {
			l.failf(s.secrets, "at least one whsec_ secret is required")
		}
		for j, ev := range ep.Events {
			if !knownEvent(ev) {
				l.failf(fmt.Sprintf("%s[%d]", s.events, j), "unknown event %q", ev)
			}
		}
	}
	return eps
}

// checkWebhookSecret reports whether secret is a valid whsec_ HMAC key (true)
// or whsk_ ed25519 private key (false). Its error never contains the secret.
// The signing package does the authoritative parse; this check only makes a
// bad secret stop start-up with the field's name.
func checkWebhookSecret(secret string) (isHMAC bool, err error) {
	switch {
	case strings.HasPrefix(secret, "whpk_"):
		return false, errors.New("whpk_ is a public key: configure the whsk_ private key here")
	case !strings.HasPrefix(secret, "whsec_") && !strings.HasPrefix(secret, "whsk_"):
		return false, errors.New("must start with whsec_ or whsk_")
	}
	// The dispatcher signs with signing.Key, so its parser is the rule.
	k, err := signing.ParseKey(secret)
	if err != nil {
		return false, err
	}
	return k.Version() == "v1", nil
}

// checkClientSecret checks an API client secret. Its error never contains
// the secret.
func checkClientSecret(secret string) error {
	if utf8.RuneCountInString(secret) < minClientSecretLen {
		return fmt.Errorf("must be at least %d characters", minClientSecretLen)
	}
	if strings.TrimSpace(secret) != secret {
		return errors.New("must not begin or end with white space")
	}
	return nil
}

// validClientKey reports whether key is 1 to 256 visible ASCII characters,
// which travel unchanged in the X-AUTH-CLIENT header.
func validClientKey(key string) bool {
	if key == "" || len(key) > 256 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return false
		}
	}
	return true
}

// validEndpointID reports whether id matches [a-z0-9_-]{1,64}.
func validEndpointID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// knownEvent reports whether name is one of the webhook event types.
func knownEvent(name string) bool {
	switch name {
	case "session.created", "session.started", "session.submitted",
		"session.review", "session.approved", "session.declined",
		"session.resubmission_requested", "session.expired", "session.abandoned",
		"session.canceled", "session.resumed", "session.deleted", "session.redacted":
		return true
	}
	return false
}

// splitList splits a comma-separated list, trimming white space around each
// entry. It keeps empty entries so that parsers can refuse them; an empty or
// blank s is an empty list.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

// parsePositiveDuration parses a Go duration string that must be above zero.
func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return d, nil
}

// parseRateWindows parses a comma-separated list of "N/duration" windows such
// as "5/1h,10/24h", N > 0 and duration > 0. formatRateWindows is its inverse.
func parseRateWindows(s string) ([]RateWindow, error) {
	items := splitList(s)
	if len(items) == 0 {
		return nil, errors.New("want at least one N/duration window, e.g. 5/1h")
	}
	ws := make([]RateWindow, 0, len(items))
	for i, item := range items {
		n, d, ok := strings.Cut(item, "/")
		if !ok {
			return nil, fmt.Errorf("entry %d %q: want N/duration, e.g. 5/1h", i+1, item)
		}
		limit, err := strconv.Atoi(n)
		if err != nil || limit <= 0 {
			return nil, fmt.Errorf("entry %d %q: limit must be a positive integer", i+1, item)
		}
		window, err := parsePositiveDuration(d)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i+1, item, err)
		}
		ws = append(ws, RateWindow{Limit: limit, Window: window})
	}
	return ws, nil
}

// formatRateWindows is the inverse of parseRateWindows.
func formatRateWindows(ws []RateWindow) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return strings.Join(parts, ",")
}

// String returns the window as "N/duration", e.g. "5/1h".
func (w RateWindow) String() string {
	return strconv.Itoa(w.Limit) + "/" + shortDuration(w.Window)
}

// parseDurations parses a non-empty comma-separated list of positive durations.
func parseDurations(s string) ([]time.Duration, error) {
	items := splitList(s)
	if len(items) == 0 {
		return nil, errors.New("want at least one duration")
	}
	ds := make([]time.Duration, len(items))
	for i, item := range items {
		d, err := parsePositiveDuration(item)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		ds[i] = d
	}
	return ds, nil
}

// parsePrefixes parses a comma-separated list of CIDRs; empty s is none.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for i, item := range splitList(s) {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("entry %d: invalid CIDR %q, want e.g. 10.0.0.0/8", i+1, item)
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// shortDuration formats d like time.Duration.String without trailing zero
// units: "1h" rather than "1h0m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Level returns LogLevel as a slog.Level (info for an unknown name).
func (c Config) Level() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// LogValue implements slog.LogValuer. It lists the settings without any
// secret: client keys but not their secrets, endpoint URLs without
// passwords, whether the UI has a password but not the password.
func (c Config) LogValue() slog.Value {
	keys := make([]string, len(c.Clients))
	for i, cl := range c.Clients {
		keys[i] = cl.Key
	}
	retry := make([]string, len(c.Webhook.RetrySchedule))
	for i, d := range c.Webhook.RetrySchedule {
		retry[i] = shortDuration(d)
	}
	nets := make([]string, len(c.Webhook.AllowNetworks))
	for i, p := range c.Webhook.AllowNetworks {
		nets[i] = p.String()
	}
	eps := make([]any, len(c.Webhook.Endpoints))
	for i, ep := range c.Webhook.Endpoints {
		eps[i] = slog.Attr{Key: ep.ID, Value: ep.LogValue()}
	}
	return slog.GroupValue(
		slog.String("redis_url", redactURL(c.RedisURL)),
		slog.String("redis_tls_ca_file", c.RedisCAFile),
		slog.Int("redis_min_replicas", c.MinReplicas),
		slog.String("admin_addr", c.AdminAddr),
		slog.String("log_level", c.LogLevel),
		slog.String("client_keys", strings.Join(keys, ",")),
		slog.String("session_ttl", shortDuration(c.SessionTTL)),
		slog.String("token_ttl", shortDuration(c.TokenTTL)),
		slog.String("purge_after", shortDuration(c.PurgeAfter)),
		slog.String("retention", shortDuration(c.Retention)),
		slog.String("record_retention", shortDuration(c.RecordRetention)),
		slog.String("events_retention", shortDuration(c.EventsRetention)),
		slog.String("delete_limit", formatRateWindows(c.DeleteLimit)),
		slog.String("sweep_every", shortDuration(c.SweepEvery)),
		slog.String("shutdown_timeout", shortDuration(c.ShutdownTimeout)),
		slog.String("shutdown_drain_delay", shortDuration(c.DrainDelay)),
		slog.String("ui_user", c.UIUser),
		slog.Bool("ui_password_set", c.UIPassword != ""),
		slog.Bool("ui_readonly", c.UIReadOnly),
		slog.Bool("pprof", c.Pprof),
		slog.Group("webhook",
			slog.String("timeout", shortDuration(c.Webhook.Timeout)),
			slog.String("retry_schedule", strings.Join(retry, ",")),
			slog.String("allow_networks", strings.Join(nets, ",")),
			slog.Group("endpoints", eps...),
		),
	)
}

// String implements fmt.Stringer without any secret.
func (c Config) String() string { return c.LogValue().String() }

// GoString implements fmt.GoStringer (%#v) without any secret.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: the key, never the secret.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key", c.Key), slog.Int("secrets", len(c.Secrets)), slog.String("signature", c.Signature))
}

// String implements fmt.Stringer without the secret.
func (c Client) String() string { return c.LogValue().String() }

// GoString implements fmt.GoStringer (%#v) without the secret.
func (c Client) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: the URL without password, the event
// filter and how many secrets of each kind, never a secret.
func (e Endpoint) LogValue() slog.Value {
	var hmacKeys, edKeys int
	for _, s := range e.Secrets {
		if strings.HasPrefix(s, "whsk_") {
			edKeys++
		} else {
			hmacKeys++
		}
	}
	events := "all"
	if len(e.Events) > 0 {
		events = strings.Join(e.Events, ",")
	}
	return slog.GroupValue(
		slog.String("id", e.ID),
		slog.String("url", redactURL(e.URL)),
		slog.String("events", events),
		slog.Int("whsec_secrets", hmacKeys),
		slog.Int("whsk_keys", edKeys),
		slog.Bool("disabled", e.Disabled),
	)
}

// String implements fmt.Stringer without the secrets.
func (e Endpoint) String() string { return e.LogValue().String() }

// GoString implements fmt.GoStringer (%#v) without the secrets.
func (e Endpoint) GoString() string { return e.String() }

// MarshalJSON implements json.Marshaler with LogValue's fields, so that
// encoding a Config never writes a secret.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(groupMap(c.LogValue())) }

// MarshalJSON implements json.Marshaler without the secret.
func (c Client) MarshalJSON() ([]byte, error) { return json.Marshal(groupMap(c.LogValue())) }

// MarshalJSON implements json.Marshaler without the secrets.
func (e Endpoint) MarshalJSON() ([]byte, error) { return json.Marshal(groupMap(e.LogValue())) }

// groupMap turns a group slog.Value into a map for encoding/json.
func groupMap(v slog.Value) map[string]any {
	m := make(map[string]any)
	for _, a := range v.Group() {
		if a.Value.Kind() == slog.KindGroup {
			m[a.Key] = groupMap(a.Value)
		} else {
			m[a.Key] = a.Value.Any()
		}
	}
	return m
}

// redactURL returns raw with any password replaced by "xxxxx"; a value that
// does not parse is hidden entirely.
func redactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "[invalid]"
	}
	return u.Redacted()
}
