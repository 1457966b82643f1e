package clienttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// The credentials a Config without its own uses.
const (
	Key    = "test-key"
	Secret = "test-secret-0123456789"
)

// MaxSkew is how far X-TIMESTAMP may be from the server's clock.
const MaxSkew = 300 * time.Second

// Config configures a Server; zero fields mean Key, Secret and time.Now.
type Config struct {
	Key, Secret string
	Now         func() time.Time
}

// Request is a request as the server received it.
type Request struct {
	Method string
	Target string // the request target of the request line: path and query as sent
	Header http.Header
	Body   []byte
	// Refused says why the authentication check refused it; "" when it
	// passed and the handler ran.
	Refused string
}

// Server is an httptest.Server that authenticates like the daemon.
type Server struct {
	*httptest.Server
	cfg Config
	tb  testing.TB

	mu     sync.Mutex
	nonces map[string]bool
	reqs   []Request
}

// NewServer starts a server that checks each request and hands the valid
// ones to h. With a tb, a refused request fails the test and the server is
// closed when the test ends; with a nil tb (in an Example) the caller
// closes it.
func NewServer(tb testing.TB, cfg Config, h http.Handler) *Server {
	if cfg.Key == "" {
		cfg.Key = Key
	}
	if cfg.Secret == "" {
		cfg.Secret = Secret
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, tb: tb, nonces: make(map[string]bool)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			WriteError(w, http.StatusBadRequest, 1001, "Could not read request body.")
			return
		}
		code, refused := s.check(r, body)
		s.mu.Lock()
		s.reqs = append(s.reqs, Request{Method: r.Method, Target: r.RequestURI, Header: r.Header.Clone(), Body: body, Refused: refused})
		s.mu.Unlock()
		if refused != "" {
			if s.tb != nil {
				s.tb.Errorf("clienttest: %s %s refused: %s", r.Method, r.RequestURI, refused)
			}
			WriteError(w, http.StatusUnauthorized, code, refused)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	if tb != nil {
		tb.Cleanup(s.Close)
	}
	return s
}

// check authenticates r as the contract's scheme v2 does and returns the
// code and reason of a refusal, or 0 and "".
func (s *Server) check(r *http.Request, body []byte) (int, string) {
	key := r.Header.Get(signing.HeaderAuthClient)
	if key == "" {
		return 1101, "X-AUTH-CLIENT missing"
	}
	if key != s.cfg.Key {
		return 1102, "unknown X-AUTH-CLIENT"
	}
	ts, ok := signing.ParseRequestTimestamp(r.Header.Get(signing.HeaderRequestTimestamp))
	if !ok {
		return 1102, "X-TIMESTAMP malformed"
	}
	if d := s.cfg.Now().Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return 1103, "X-TIMESTAMP outside the window"
	}
	nonce := r.Header.Get(signing.HeaderNonce)
	if !signing.ValidNonce(nonce) {
		return 1102, "X-NONCE malformed"
	}
	mac, ok := signing.ParseRequestSignature(r.Header.Get(signing.HeaderHMACSignature))
	if !ok {
		return 1102, "X-HMAC-SIGNATURE malformed"
	}
	canonical := signing.CanonicalRequest(r.Method, r.RequestURI, sha256.Sum256(body), ts, nonce)
	if !signing.VerifyRequest([][]byte{[]byte(s.cfg.Secret)}, canonical, mac) {
		return 1102, "signature does not match"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nonces[nonce] {
		return 1105, "nonce already used"
	}
	s.nonces[nonce] = true
	return 0, ""
}

// Requests returns the requests received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("clienttest: WriteJSON: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// WriteError answers status with the contract's error body.
func WriteError(w http.ResponseWriter, status, code int, message string) {
	WriteJSON(w, status, map[string]any{"status": "fail", "code": code, "message": message})
}
