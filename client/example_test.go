package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/client/clienttest"
)

// fakeDaemon answers a few routes the way sessiond does; clienttest checks
// each request's signature first.
func fakeDaemon() *clienttest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var in client.CreateSessionRequest
		json.NewDecoder(r.Body).Decode(&in)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":"6f1c2a9e-0b7d-4c1e-9a55-3f0e8d2b7c41","ref_id":%q,"status":"created",`+
			`"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z",`+
			`"expires_at":"2026-01-03T03:04:05.678Z","tags":[],`+
			`"token":"vst_example","token_expires_at":"2026-01-02T03:34:05.678Z"}`, in.RefID)
	})
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		clienttest.WriteError(w, http.StatusNotFound, client.CodeNotFound, "Session not found.")
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("after") != "" {
			clienttest.WriteJSON(w, http.StatusOK, map[string]any{"events": []any{}, "next_cursor": r.URL.Query().Get("after")})
			return
		}
		w.Write([]byte(`{"events":[` +
			`{"id":"evt_1","cursor":"1-0","type":"session.created","timestamp":"2026-01-02T03:04:05.678Z","data":{"id":"s1","status":"created","sequence":1}},` +
			`{"id":"evt_2","cursor":"2-0","type":"session.approved","timestamp":"2026-01-02T03:09:00.000Z","data":{"id":"s1","status":"approved","sequence":2}}` +
			`],"next_cursor":"2-0"}`))
	})
	return clienttest.NewServer(nil, clienttest.Config{}, mux)
}

func ExampleClient_CreateSession() {
	srv := fakeDaemon()
	defer srv.Close()
	c, err := client.New(srv.URL, clienttest.Key, clienttest.Secret)
	if err != nil {
		log.Fatal(err)
	}
	s, err := c.CreateSession(context.Background(), client.CreateSessionRequest{
		RefID:  "user-42",
		Person: json.RawMessage(`{"first_name":"Ada"}`),
	}, client.WithIdempotencyKey("signup-user-42")) // a retry cannot create a second session
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.ID, s.Status, "new:", s.New)
	fmt.Println("token valid for", s.TokenExpiresAt.Sub(s.CreatedAt))
	// Output:
	// 6f1c2a9e-0b7d-4c1e-9a55-3f0e8d2b7c41 created new: true
	// token valid for 30m0s
}

func ExampleIsNotFound() {
	srv := fakeDaemon()
	defer srv.Close()
	c, err := client.New(srv.URL, clienttest.Key, clienttest.Secret)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.GetSession(context.Background(), "6f1c2a9e-0b7d-4c1e-9a55-3f0e8d2b7c41")
	fmt.Println(client.IsNotFound(err))
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.StatusCode, e.Code, e.Message)
	}
	fmt.Println(err)
	// Output:
	// true
	// 404 1104 Session not found.
	// get session: sessiond answered 404, code 1104: Session not found.
}

func ExampleClient_FollowEvents() {
	srv := fakeDaemon()
	defer srv.Close()
	c, err := client.New(srv.URL, clienttest.Key, clienttest.Secret)
	if err != nil {
		log.Fatal(err)
	}
	// Tail the feed until the context ends (here: after two events).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	err = c.FollowEvents(ctx, client.FollowOptions{MinInterval: 10 * time.Millisecond}, func(e client.Event) error {
		fmt.Println(e.Cursor, e.Type, e.Timestamp.Format(time.TimeOnly))
		if n++; n == 2 {
			cancel()
		}
		return nil
	})
	fmt.Println(err)
	// Output:
	// 1-0 session.created 03:04:05
	// 2-0 session.approved 03:09:00
	// context canceled
}
