package client_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/client/clienttest"
)

func TestErrorDecoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		header      map[string]string
		body        string
		want        client.Error
		notFound    bool
		rateLimited bool
	}{
		{
			name: "contract shape", status: 404,
			body:     `{"status":"fail","code":1104,"message":"Session not found."}`,
			want:     client.Error{StatusCode: 404, Code: 1104, Message: "Session not found."},
			notFound: true,
		},
		{
			name: "rate limited", status: 429, header: map[string]string{"Retry-After": "3600"},
			body:        `{"status":"fail","code":1004,"message":"Too many deletes."}`,
			want:        client.Error{StatusCode: 429, Code: 1004, Message: "Too many deletes.", RetryAfter: time.Hour},
			rateLimited: true,
		},
		{
			name: "message on one line", status: 400,
			body: `{"status":"fail","code":1001,"message":"body:\nmalformed\tJSON"}`,
			want: client.Error{StatusCode: 400, Code: 1001, Message: "body: malformed JSON"},
		},
		{
			name: "proxy page", status: 502,
			body: "<html>\n<body>Bad gateway</body>\n</html>",
			want: client.Error{StatusCode: 502, Message: "<html> <body>Bad gateway</body> </html>"},
		},
		{
			name: "empty body", status: 500,
			want: client.Error{StatusCode: 500, Message: "Internal Server Error"},
		},
		{
			name: "long body is cut", status: 500, body: strings.Repeat("x", 500),
			want: client.Error{StatusCode: 500, Message: strings.Repeat("x", 120) + "…"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			c := newClient(t, srv, client.WithRetry(client.RetryPolicy{MaxAttempts: 1}))
			err := c.DeleteSession(t.Context(), "8a1b")
			var e *client.Error
			if !errors.As(fmt.Errorf("wrapped: %w", err), &e) {
				t.Fatalf("err = %v (%T), want a *client.Error", err, err)
			}
			if *e != tt.want {
				t.Errorf("error = %+v, want %+v", *e, tt.want)
			}
			if client.IsNotFound(err) != tt.notFound || client.IsRateLimited(err) != tt.rateLimited {
				t.Errorf("IsNotFound = %v, IsRateLimited = %v; want %v, %v", client.IsNotFound(err), client.IsRateLimited(err), tt.notFound, tt.rateLimited)
			}
			if !strings.HasPrefix(err.Error(), "delete session: sessiond answered ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("message = %q, want one line naming the operation", err.Error())
			}
		})
	}
}

func TestErrorHelpersOnOtherErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{nil, errors.New("x"), &client.Error{StatusCode: 409, Code: 1401}} {
		if client.IsNotFound(err) {
			t.Errorf("IsNotFound(%v) = true", err)
		}
	}
	if client.ErrorCode(fmt.Errorf("op: %w", &client.Error{Code: 1409})) != client.CodeConflict {
		t.Error("ErrorCode does not see through wrapping")
	}
}

// TestNoSecretsInErrors: whatever goes wrong, no error text holds the API
// secret, the token sent, the request body or the signature.
func TestNoSecretsInErrors(t *testing.T) {
	t.Parallel()
	const token = "vst_TOKEN_must_not_leak"
	var sigs []string
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clienttest.WriteError(w, 400, 1001, "Invalid token format.")
	}))
	c := newClient(t, srv, client.WithRetry(client.RetryPolicy{MinBackoff: time.Millisecond}))
	_, err1 := c.Introspect(t.Context(), token)
	for _, r := range srv.Requests() {
		sigs = append(sigs, r.Header.Get("X-HMAC-SIGNATURE"), r.Header.Get("X-NONCE"))
	}
	srv.Close()
	_, err2 := c.Introspect(t.Context(), token) // connection refused
	_, err3 := c.Do(t.Context(), "POST", "/v1/tokens/introspect", []byte(`{"token":"`+token+`"}`))
	for _, err := range []error{err1, err2, err3} {
		if err == nil {
			t.Fatal("a call succeeded")
		}
		msg := fmt.Sprintf("%v %+v %#v", err, err, err)
		for _, secret := range append(sigs, token, clienttest.Secret) {
			if secret != "" && strings.Contains(msg, secret) {
				t.Errorf("error %q holds %q", msg, secret)
			}
		}
	}
	if s := fmt.Sprintf("%v %+v %#v %s", c, c, c, c); strings.Contains(s, clienttest.Secret) {
		t.Errorf("the client formats as %q, with its secret", s)
	}
}
