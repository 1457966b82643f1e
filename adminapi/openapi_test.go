package adminapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const openapiPath = "../configs/openapi.yaml"

var httpMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

type openapiDoc struct {
	OpenAPI    string                    `yaml:"openapi"`
	Paths      map[string]map[string]any `yaml:"paths"` // path -> method (or "parameters") -> object
	Components struct {
		SecuritySchemes map[string]struct {
			Type string `yaml:"type"`
			In   string `yaml:"in"`
			Name string `yaml:"name"`
		} `yaml:"securitySchemes"`
		Schemas map[string]schema `yaml:"schemas"`
	} `yaml:"components"`
	Security []map[string][]string `yaml:"security"`
}

type schema struct {
	Required   []string          `yaml:"required"`
	Properties map[string]schema `yaml:"properties"`
	AllOf      []struct {
		Ref string `yaml:"$ref"`
	} `yaml:"allOf"`
	Enum []any `yaml:"enum"`
}

func loadOpenAPI(t *testing.T) *openapiDoc {
	t.Helper()
	b, err := os.ReadFile(openapiPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc openapiDoc
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", openapiPath, err)
	}
	return &doc
}

// operations returns the documented "METHOD /path" set.
func (d *openapiDoc) operations() map[string]bool {
	ops := make(map[string]bool)
	for path, item := range d.Paths {
		for m := range item {
			if slices.Contains(httpMethods, strings.ToUpper(m)) {
				ops[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	return ops
}

// props returns the property names a schema allows, following allOf.
func (d *openapiDoc) props(name string) map[string]bool {
	s := d.Components.Schemas[name]
	out := make(map[string]bool)
	for _, a := range s.AllOf {
		for p := range d.props(strings.TrimPrefix(a.Ref, "#/components/schemas/")) {
			out[p] = true
		}
	}
	for p := range s.Properties {
		out[p] = true
	}
	return out
}

// TestOpenAPIMatchesRoutes keeps configs/openapi.yaml and the routes the
// daemon serves from drifting apart, both ways.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	ops := doc.operations()

	// Every /v1 route registered in routes.go is documented.
	d := newEnv(t, withOperators)
	for _, p := range d.api.Patterns() {
		if !ops[p] {
			t.Errorf("routes.go registers %q, which configs/openapi.yaml does not document", p)
		}
	}

	// Live: every documented operation is served (the operators' routes
	// too); every other method on a documented path is refused; an unknown
	// /v1 path is a JSON 404.
	const anID = "0b9f8a5e-7f4c-4d5e-9a51-2d6c1b3e4f50"
	concrete := func(path string) string { return strings.ReplaceAll(path, "{id}", anID) }
	probe := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, d.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var b []byte
		b, _ = readAllLimit(resp)
		return resp, b
	}
	paths := make(map[string][]string) // path -> documented methods
	for op := range ops {
		m, p, _ := strings.Cut(op, " ")
		paths[p] = append(paths[p], m)
	}
	for path, methods := range paths {
		sort.Strings(methods)
		for _, m := range methods {
			op := m + " " + path
			resp, body := probe(m, concrete(path))
			if !strings.HasPrefix(path, "/v1/") {
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s = %d, want 200", op, resp.StatusCode)
				}
				continue
			}
			var e struct{ Code int }
			_ = json.Unmarshal(body, &e)
			if resp.StatusCode != http.StatusUnauthorized || e.Code != CodeMissingAuth {
				t.Errorf("%s without credentials = %d %s, want 401 code %d (a served, authenticated route)", op, resp.StatusCode, body, CodeMissingAuth)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("%s: Cache-Control = %q, want no-store", op, got)
			}
		}
		for _, m := range httpMethods {
			if slices.Contains(methods, m) || path == "/ui/" { // the UI owns its whole subtree
				continue
			}
			resp, _ := probe(m, concrete(path))
			if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
				t.Errorf("undocumented %s %s = %d, want 404 or 405", m, path, resp.StatusCode)
			}
			if strings.HasPrefix(path, "/v1/") && resp.StatusCode == http.StatusMethodNotAllowed {
				allow := strings.Split(strings.ReplaceAll(resp.Header.Get("Allow"), " ", ""), ",")
				sort.Strings(allow)
				if !slices.Equal(allow, methods) {
					t.Errorf("%s %s: Allow = %v, documented methods %v", m, path, allow, methods)
				}
			}
		}
	}
	for _, path := range []string{"/v1/nope", "/v1/sessions/" + anID + "/nope", "/v1/deliveries"} {
		resp, body := probe(http.MethodGet, path)
		var e struct{ Code int }
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != http.StatusNotFound || e.Code != CodeNotFound {
			t.Errorf("GET %s = %d %s, want 404 code %d", path, resp.StatusCode, body, CodeNotFound)
		}
	}
}

// TestOpenAPIContract checks the document's security, error codes and
// schemas against what the daemon answers.
func TestOpenAPIContract(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)

	// Security: the four headers, required together, on every /v1 operation.
	for name, header := range map[string]string{"apiKey": "X-AUTH-CLIENT", "timestamp": "X-TIMESTAMP", "nonce": "X-NONCE", "signature": "X-HMAC-SIGNATURE"} {
		s := doc.Components.SecuritySchemes[name]
		if s.Type != "apiKey" || s.In != "header" || s.Name != header {
			t.Errorf("securitySchemes.%s = %+v, want apiKey in header %s", name, s, header)
		}
	}
	if len(doc.Security) != 1 || len(doc.Security[0]) != 4 {
		t.Errorf("top-level security = %v, want one requirement with apiKey, timestamp, nonce and signature", doc.Security)
	}
	for path, item := range doc.Paths {
		for m, v := range item {
			op, ok := v.(map[string]any)
			if !ok || !slices.Contains(httpMethods, strings.ToUpper(m)) {
				continue
			}
			_, overrides := op["security"]
			if overrides && strings.HasPrefix(path, "/v1/") {
				t.Errorf("%s %s overrides the /v1 security", strings.ToUpper(m), path)
			}
			if !overrides && !strings.HasPrefix(path, "/v1/") {
				t.Errorf("%s %s needs security: [] (or its own), it is outside /v1", strings.ToUpper(m), path)
			}
		}
	}

	// Error codes: the document's enum is the API's set.
	var codes []int
	for _, v := range doc.Components.Schemas["Error"].Properties["code"].Enum {
		n, _ := v.(int)
		codes = append(codes, n)
	}
	want := []int{codeInternal, CodeInvalidRequest, CodeTooManyRequests, CodeMissingAuth, CodeAuthFailed,
		CodeTimestamp, CodeNotFound, CodeReplayed, CodeNotCompleted, CodeSessionInProgress,
		CodeInvalidTransition, CodeConflict}
	slices.Sort(codes)
	slices.Sort(want)
	if !slices.Equal(codes, want) {
		t.Errorf("Error.code enum = %v, want %v", codes, want)
	}

	// Shapes: what the port answers has the documented fields, no more.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	d := newEnv(t, withOperators, withEndpoint(receiver.URL))
	checkKeys := func(what, schemaName string, body []byte) {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: %v: %s", what, err, body)
		}
		allowed := doc.props(schemaName)
		for k := range m {
			if !allowed[k] {
				t.Errorf("%s has field %q, which schema %s does not document", what, k, schemaName)
			}
		}
		s := doc.Components.Schemas[schemaName]
		for _, r := range s.Required {
			if _, ok := m[r]; !ok {
				t.Errorf("%s lacks field %q, required by schema %s", what, r, schemaName)
			}
		}
	}
	code, body := d.call(http.MethodPost, "/v1/sessions", "", map[string]any{
		"ref_id": "openapi-user", "flow_id": "kyc", "person": map[string]string{"first_name": "A"}, "metadata": map[string]int{"n": 1},
	})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	checkKeys("create answer", "SessionWithToken", body)
	var s struct{ ID string }
	_ = json.Unmarshal(body, &s)
	for _, st := range []string{"started", "submitted"} {
		if code, body := d.call(http.MethodPost, "/v1/sessions/"+s.ID+"/status", "", map[string]string{"status": st}); code != http.StatusOK {
			t.Fatalf("progress to %s: %d %s", st, code, body)
		}
	}
	code, body = d.call(http.MethodPost, "/v1/sessions/"+s.ID+"/decision", "", map[string]any{"status": "declined", "reason": "x", "reason_code": 7})
	if code != http.StatusOK {
		t.Fatalf("decision: %d %s", code, body)
	}
	checkKeys("decision answer", "Session", body)
	var withDecision struct{ Decision json.RawMessage }
	_ = json.Unmarshal(body, &withDecision)
	checkKeys("decision object", "Decision", withDecision.Decision)
	_, body = d.call(http.MethodGet, "/v1/sessions?ref_id=openapi-user", "", nil)
	checkKeys("list answer", "SessionPage", body)
	_, body = d.call(http.MethodGet, "/v1/events?limit=5", "", nil)
	checkKeys("events answer", "EventsPage", body)
	_, body = d.call(http.MethodGet, "/v1/sessions/"+s.ID+"/nope", s.ID, nil)
	checkKeys("error answer", "Error", body)
	_, body = d.getPath("/readyz")
	checkKeys("readyz answer", "Probe", body)

	// Deliveries: the session's list once one has an attempt.
	var list struct {
		Deliveries []json.RawMessage
	}
	deadline := time.Now().Add(15 * time.Second)
	for attempted := false; !attempted; {
		code, body = d.call(http.MethodGet, "/v1/sessions/"+s.ID+"/deliveries", s.ID, nil)
		if code != http.StatusOK {
			t.Fatalf("deliveries: %d %s", code, body)
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		attempted = strings.Contains(string(body), `"attempt":1`)
		if !attempted && time.Now().After(deadline) {
			t.Fatalf("no delivery attempt within 15s: %s", body)
		}
		if !attempted {
			time.Sleep(20 * time.Millisecond) // polling the API, with a deadline
		}
	}
	t.Logf("checked %d deliveries against schema Delivery", len(list.Deliveries))
	for i, dl := range list.Deliveries {
		checkKeys("delivery "+strconv.Itoa(i), "Delivery", dl)
		var withAttempts struct{ Attempts []json.RawMessage }
		_ = json.Unmarshal(dl, &withAttempts)
		for _, a := range withAttempts.Attempts {
			checkKeys("attempt", "Attempt", a)
		}
	}
}

func readAllLimit(resp *http.Response) ([]byte, error) {
	var b strings.Builder
	buf := make([]byte, 4096)
	for b.Len() < 1<<20 {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return []byte(b.String()), nil
}
