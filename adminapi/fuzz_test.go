package adminapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// oracleDepth is the nesting depth of a valid JSON text, counted from its
// brackets outside strings (sharing no code with the scanner).
func oracleDepth(b []byte) int {
	depth, most, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			most = max(most, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return most
}

// FuzzCheckJSON checks the body rules against an independent oracle: the
// go-json-experiment validator (RFC 7493 by default: it refuses invalid
// UTF-8, lone surrogates and duplicate names) plus a bracket count for
// depth.
func FuzzCheckJSON(f *testing.F) {
	for _, seed := range []string{
		`{"ref_id":"a"}`, `{"a":{"b":[1,2,{"c":null}]}}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`,
		`{"s":"\ud800"}`, `{"s":"\ud83d\ude00"}`, `{"s":"\udc00"}`, "{\"s\":\"\xff\"}", `[1e999,-0.5e+3]`,
		`{"a":01}`, `{"a":1.}`, `{"a":-}`, `"x"`, `  `, `{} {}`, `{"a":"\t"}`, "{\"a\":\"\t\"}",
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"a":{},"b":{"a":1}}`, `{"\\":1,"\\\\":2}`, `{"a":"\/"}`, `tru`, `nul`, `{"a" 1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := checkJSON(body)
		if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
			if err != nil {
				t.Fatalf("checkJSON(%q) = %v, want nil for an empty body", body, err)
			}
			return
		}
		valid := jsontext.Value(body).IsValid()
		want := valid && oracleDepth(body) <= maxJSONDepth
		if (err == nil) != want {
			t.Fatalf("checkJSON(%q) = %v; oracle: valid %v, depth %d", body, err, valid, oracleDepth(body))
		}
		if err != nil {
			if e := errorFor(err); e.Status != http.StatusBadRequest || e.Code != CodeInvalidRequest {
				t.Fatalf("checkJSON(%q) error maps to %d/%d", body, e.Status, e.Code)
			}
		}
	})
}

// FuzzAuthHeaders sends arbitrary authentication headers: the answer is
// never a panic or a 500, never a success unless the signature is the
// oracle's, and a refusal is one of the contract's 401 codes.
func FuzzAuthHeaders(f *testing.F) {
	f.Add(testKey, "1709294400", "nonce-0000000000000001", "v2=00", "GET", "/v1/events")
	f.Add("", "", "", "", "GET", "/v1/events?limit=1")
	f.Add(testKey, "x", "n", "v2="+oracleV2(testSecret, "GET", "/v1/events", nil, 1709294400, "nonce-000000000000000a")[3:], "GET", "/v1/events")
	f.Add(legacyKey, "", "", oracleLegacy(legacySecret, ""), "GET", "/v1/events")
	f.Add("key-3", "1709294400", "nonce-0000000000000001", "", "POST", "/v1/sessions/x/cancel")
	a := newEnv(f)
	f.Fuzz(func(t *testing.T, key, ts, nonceH, sig, method, target string) {
		if method != "GET" && method != "POST" {
			method = "GET"
		}
		if len(target) == 0 || target[0] != '/' {
			target = "/v1/events"
		}
		req := httptest.NewRequestWithContext(t.Context(), method, "http://sessiond"+"/v1/events", nil)
		if u, err := req.URL.Parse(target); err == nil && u.Host == "" {
			req.URL, req.RequestURI = u, u.RequestURI()
		}
		for k, v := range map[string]string{"X-AUTH-CLIENT": key, "X-TIMESTAMP": ts, "X-NONCE": nonceH, "X-HMAC-SIGNATURE": sig} {
			if v != "" {
				req.Header[k] = []string{v}
			}
		}
		rec := httptest.NewRecorder()
		a.api.ServeHTTP(rec, req)
		var body errorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		switch {
		case rec.Code >= 500:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		case rec.Code < 300:
			n, _ := strconv.ParseInt(ts, 10, 64)
			v2 := key == testKey && (sig == oracleV2(testSecret, method, req.RequestURI, nil, n, nonceH) || sig == oracleV2(testSecret2, method, req.RequestURI, nil, n, nonceH))
			old := key == legacyKey && ts == "" && sig == oracleLegacy(legacySecret, legacyPart(req.RequestURI, ""))
			if !v2 && !old {
				t.Fatalf("accepted without a valid signature: key %q ts %q nonce %q sig %q %s %s", key, ts, nonceH, sig, method, target)
			}
		case rec.Code == 401:
			switch body.Code {
			case CodeMissingAuth, CodeAuthFailed, CodeTimestamp, CodeReplayed:
			default:
				t.Fatalf("401 with code %d", body.Code)
			}
		}
	})
}

// FuzzDecodeCreate feeds arbitrary bodies (and Idempotency-Keys) to the
// create route, correctly signed: the answer is a session (200/201) or the
// contract's 400 code 1001, never a 500 or a panic, and a refused body
// changes nothing.
func FuzzDecodeCreate(f *testing.F) {
	for _, seed := range []string{
		`{"ref_id":"a"}`,
		`{"ref_id":"a","flow_id":"f","person":{"name":"N","dob":"1990-01-01"},"metadata":{"k":[1,2]},"force_creation":true}`,
		`{"ref_id":"a","person":null,"metadata":null}`,
		`{"ref_id":"a"}}`, `{"ref_id":"a"} x`, `{`, `}`, ``, `null`, `[]`, `"ref_id"`, `1e999`,
		`{"ref_id":""}`, `{"ref_id":"\u0000"}`, `{"ref_id":"\ud800"}`, `{"ref_id":"a","person":"x"}`,
		`{"ref_id":"a","person":{"a":1e999}}`, `{"REF_ID":"a"}`, `{"ref_id":"a","ref_id":"b"}`,
		`{"ref_id":"a","metadata":{"x":"` + "\xff\xfe" + `"}}`, `{"ref_id":"a","force_creation":1}`,
		`{"ref_id":"a","person":[[[[[[[[[[[]]]]]]]]]]]}`, "{\"ref_id\":\"a\"}\n\t ", `{"ref_id":"a\u202e"}`,
	} {
		f.Add([]byte(seed), "")
		f.Add([]byte(seed), "idem-1")
	}
	a := newEnv(f, apiConfig(func(c *Config) { c.MaxBodyBytes = 64 << 10 }))
	f.Fuzz(func(t *testing.T, body []byte, idem string) {
		a := a.with(t)
		before, err := a.svc.Events(a.ctx, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		req := a.build("POST", "/v1/sessions", string(body))
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		rec := httptest.NewRecorder()
		a.api.ServeHTTP(rec, req)
		after, err := a.svc.Events(a.ctx, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		switch rec.Code {
		case http.StatusOK, http.StatusCreated:
			if !jsontext.Value(body).IsValid() {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			var c struct {
				ID     string `json:"id"`
				Status string `json:"status"`
				Token  string `json:"token"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil || c.Token == "" || c.Status == "" {
				t.Fatalf("success body %s: %v", rec.Body, err)
			}
			if _, err := a.svc.Get(a.ctx, c.ID); err != nil {
				t.Fatalf("created session %s: %v", c.ID, err)
			}
		case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != CodeInvalidRequest {
				t.Fatalf("refusal %d %s", rec.Code, rec.Body)
			}
			if rec.Code == http.StatusBadRequest && len(after.Events) != len(before.Events) {
				t.Fatalf("a refused body %q changed the events feed", body)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}
