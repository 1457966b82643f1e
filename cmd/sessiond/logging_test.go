package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestLogsHoldNoSecrets runs a full session flow at debug level with known
// secrets and personal data, then checks that the output is JSON lines with
// stable snake_case keys and holds none of them.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		uiPassword = "ui-pass-Qz8w-7d1c"
		whKey      = "webhook-key-Vr4n-9s2k-1234567890" // at least 16 bytes
	)
	webhookSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte(whKey))
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	d := startDaemon(t, nil, map[string]string{
		"SESSIOND_UI_PASSWORD":            uiPassword,
		"SESSIOND_WEBHOOK_URL":            receiver.URL + "/hooks",
		"SESSIOND_WEBHOOK_SECRET":         webhookSecret,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
	})

	person := map[string]string{
		"first_name":    "Hieronymus",
		"last_name":     "Quackenbush-Oyelaran",
		"date_of_birth": "1911-02-29",
		"id_number":     "X9Q7-55-4411",
		"email":         "hq.private@example.org",
	}
	id, token := d.createSession("logs-user-1", person)
	for _, s := range []string{"started", "submitted"} {
		if code, b := d.call(http.MethodPost, "/v1/sessions/"+id+"/status", "", map[string]string{"status": s}); code != http.StatusOK {
			t.Fatalf("progress to %s: %d %s", s, code, b)
		}
	}
	if code, b := d.call(http.MethodPost, "/v1/sessions/"+id+"/decision", "", map[string]string{"status": "approved", "reason": "documents match"}); code != http.StatusOK {
		t.Fatalf("decision: %d %s", code, b)
	}
	d.call(http.MethodGet, "/v1/sessions/"+id, id, nil)
	d.call(http.MethodGet, "/v1/sessions?ref_id=logs-user-1", "", nil)
	d.call(http.MethodGet, "/v1/events?limit=10", "", nil)
	if code, b := d.call(http.MethodDelete, "/v1/sessions/"+id, id, nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, b)
	}

	// Failures log too: a bad signature, bad JSON with personal data in it,
	// a wrong UI password, a right one.
	req, _ := http.NewRequest(http.MethodPost, d.URL+"/v1/sessions", strings.NewReader(`{"ref_id":"x","person":{"first_name":"Hieronymus"},"bogus":1}`))
	signRequest(req, testAPIKey, testAPISecret, nil) // signed without its body: refused

	d.do(req)
	d.call(http.MethodPost, "/v1/sessions", "", map[string]any{"ref_id": "x", "person": map[string]string{"first_name": "Hieronymus"}, "bogus": 1})
	for _, pass := range []string{uiPassword + "-wrong", uiPassword} {
		req, _ := http.NewRequest(http.MethodGet, d.URL+"/ui/", nil)
		req.SetBasicAuth("admin", pass)
		d.do(req)
	}
	d.get("/metrics")
	if err := d.Stop(); err != nil {
		t.Fatalf("run: %v", err)
	}

	logs := d.Logs.String()
	forbidden := map[string]string{
		"API secret":              testAPISecret,
		"webhook secret":          webhookSecret,
		"webhook secret (base64)": strings.TrimPrefix(webhookSecret, "whsec_"),
		"webhook key":             whKey,
		"UI password":             uiPassword,
		"UI basic auth header":    base64.StdEncoding.EncodeToString([]byte("admin:" + uiPassword)),
		"session token":           token,
		"session token (no vst_)": strings.TrimPrefix(token, "vst_"),
	}
	for field, v := range person {
		forbidden["person."+field] = v
	}
	for what, secret := range forbidden {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain the %s (%q)", what, secret)
		}
	}

	// One JSON object per line, with time, level, msg and snake_case keys.
	keyRE := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	var checkKeys func(prefix string, m map[string]any)
	checkKeys = func(prefix string, m map[string]any) {
		for k, v := range m {
			// Endpoint ids (a-z 0-9 _ -) are keys under the endpoints group.
			if !keyRE.MatchString(k) && prefix != "config.webhook.endpoints" {
				t.Errorf("log key %q under %q is not snake_case", k, prefix)
			}
			if sub, ok := v.(map[string]any); ok {
				checkKeys(strings.TrimPrefix(prefix+"."+k, "."), sub)
			}
		}
	}
	lines := d.Logs.Lines()
	requests := 0
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not a JSON object: %q", line)
			continue
		}
		for _, k := range []string{slog.TimeKey, slog.LevelKey, slog.MessageKey} {
			if _, ok := m[k]; !ok {
				t.Errorf("log line lacks %q: %s", k, line)
			}
		}
		checkKeys("", m)
		if m["msg"] == "http request" {
			requests++
		}
	}
	if requests == 0 {
		t.Errorf("no access log line at debug level in:\n%s", logs)
	}
	if t.Failed() || os.Getenv("SESSIOND_SHOW_LOGS") != "" {
		t.Logf("logs:\n%s", logs)
	}
}
