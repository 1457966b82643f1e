package lifecycle

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
)

func (e *env) list(q ListQuery) *Page {
	e.t.Helper()
	p, err := e.svc.List(e.ctx, q)
	if err != nil {
		e.t.Fatalf("List(%+v): %v", q, err)
	}
	return p
}

// TestListFilters checks newest-first order merged across shards and the
// ref_id and status filters, alone and together.
func TestListFilters(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		step := func(id string, o string) {
			t.Helper()
			if err := machineOp(o).do(e.ctx, e.svc, id); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
		}
		next := func(ref string) string {
			t.Helper()
			e.clock.Advance(time.Second)
			return e.createWith(CreateRequest{RefID: ref, Person: json.RawMessage(`{"r":"` + ref + `"}`)}).ID
		}
		s1 := next("a")
		step(s1, "cancel")
		s2 := next("a")
		s3 := next("b")
		step(s3, "progress_started")
		s4 := next("c")
		s5 := next("d")
		step(s5, "progress_submitted")
		shards := map[keyspace.Shard]bool{}
		for _, id := range []string{s1, s3, s4, s5} {
			shards[e.shardOf(id)] = true
		}
		if len(shards) < 3 {
			t.Fatalf("the refs fall in %d shards; the test needs them spread", len(shards))
		}

		cases := []struct {
			q    ListQuery
			want []string
		}{
			{ListQuery{}, []string{s5, s4, s3, s2, s1}},
			{ListQuery{RefID: "a"}, []string{s2, s1}},
			{ListQuery{Status: StatusCreated}, []string{s4, s2}},
			{ListQuery{RefID: "a", Status: StatusCanceled}, []string{s1}},
			{ListQuery{RefID: "a", Status: StatusStarted}, []string{}},
			{ListQuery{RefID: "nobody"}, []string{}},
			{ListQuery{Status: StatusApproved}, []string{}},
		}
		for _, tc := range cases {
			p := e.list(tc.q)
			if got := ids(p.Sessions); !slices.Equal(got, tc.want) {
				t.Errorf("List(%+v) = %v, want %v", tc.q, got, tc.want)
			}
			if p.NextCursor != nil {
				t.Errorf("List(%+v): next_cursor %q on the last page", tc.q, *p.NextCursor)
			}
		}
		if p := e.list(ListQuery{RefID: "c"}); len(p.Sessions) != 1 || string(p.Sessions[0].Person) != `{"r":"c"}` {
			t.Errorf("list does not carry personal data: %+v", p.Sessions)
		}
		if b, _ := json.Marshal(e.list(ListQuery{RefID: "nobody"})); string(b) != `{"sessions":[],"next_cursor":null}` {
			t.Errorf("empty page encodes as %s", b)
		}

		// Past their time limit, pending sessions list as expired or
		// abandoned, under either filter.
		e.clock.Advance(testSessionTTL)
		for _, tc := range []struct {
			q    ListQuery
			want []string
		}{
			{ListQuery{Status: StatusExpired}, []string{s4, s2}},
			{ListQuery{Status: StatusAbandoned}, []string{s3}},
			{ListQuery{Status: StatusCreated}, []string{}},
			{ListQuery{Status: StatusStarted}, []string{}},
			{ListQuery{RefID: "a", Status: StatusExpired}, []string{s2}},
			{ListQuery{}, []string{s5, s4, s3, s2, s1}},
		} {
			if got := ids(e.list(tc.q).Sessions); !slices.Equal(got, tc.want) {
				t.Errorf("after expiry, List(%+v) = %v, want %v", tc.q, got, tc.want)
			}
		}
		for _, s := range e.list(ListQuery{}).Sessions {
			if s.Status.Pending() {
				t.Errorf("list shows %s pending past its time", s.ID)
			}
			e.checkSession(s.ID)
			if n := len(e.events(s.ID)); s.Status == StatusExpired && n != 2 {
				t.Errorf("%s: %d events, want created and expired only", s.ID, n)
			}
		}
	})
}

// TestListLimits checks the limit's default and bounds and the other
// refused queries.
func TestListLimits(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		for i := range 25 {
			e.create(fmt.Sprintf("ref-%02d", i))
		}
		for _, tc := range []struct {
			limit, want int
			more        bool
		}{
			{0, DefaultListLimit, true}, {1, 1, true}, {24, 24, true}, {25, 25, false}, {MaxListLimit, 25, false},
		} {
			p := e.list(ListQuery{Limit: tc.limit})
			if len(p.Sessions) != tc.want || (p.NextCursor != nil) != tc.more {
				t.Errorf("limit %d: %d sessions, cursor %v; want %d, more=%v", tc.limit, len(p.Sessions), p.NextCursor != nil, tc.want, tc.more)
			}
		}
		var ve *ValidationError
		for _, q := range []ListQuery{
			{Limit: -1}, {Limit: MaxListLimit + 1},
			{Status: "bogus"},
			{RefID: "a\nb"},
			{Cursor: "!!"},
			{Cursor: base64.RawURLEncoding.EncodeToString([]byte("garbage"))},
			{Cursor: base64.RawURLEncoding.EncodeToString([]byte("123:" + e.create("x").ID))},
			{Cursor: base64.StdEncoding.EncodeToString([]byte("0000000000000:00000000-0000-0000-0000-000000000000"))},
		} {
			if _, err := e.svc.List(e.ctx, q); !errors.As(err, &ve) {
				t.Errorf("List(%+v): %v, want a ValidationError", q, err)
			}
		}
	})
}

// TestListPagination walks pages of sessions spread over the shards while
// sessions are created (and one is deleted) between them: no session that
// existed before is skipped or repeated, and the pages together are newest
// first.
func TestListPagination(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		var original []string
		shards := map[keyspace.Shard]bool{}
		for i := range 40 {
			if i%3 == 0 {
				e.clock.Advance(time.Millisecond) // several sessions share each millisecond
			}
			id := e.create(fmt.Sprintf("p%02d", i)).ID
			original = append(original, id)
			shards[e.shardOf(id)] = true
		}
		if len(shards) < keyspace.Shards/2 {
			t.Fatalf("40 refs fall in %d shards", len(shards))
		}
		deleted := original[20]
		seen := map[string]int{}
		var order []Session
		cursor := ""
		extra := 0
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("pagination does not end")
			}
			p := e.list(ListQuery{Limit: 7, Cursor: cursor})
			for _, s := range p.Sessions {
				seen[s.ID]++
				order = append(order, s)
			}
			if p.NextCursor == nil {
				break
			}
			cursor = *p.NextCursor
			// New sessions arrive concurrently between pages.
			var wg sync.WaitGroup
			for range 3 {
				extra++
				ref := fmt.Sprintf("new%02d", extra)
				wg.Go(func() {
					if _, err := e.svc.Create(e.ctx, CreateRequest{RefID: ref}); err != nil {
						t.Errorf("create: %v", err)
					}
				})
			}
			wg.Wait()
			if pages == 1 {
				if err := e.svc.Delete(e.ctx, deleted); err != nil {
					t.Fatal(err)
				}
			}
			e.clock.Advance(time.Millisecond)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("session %s listed %d times", id, n)
			}
		}
		for _, id := range original {
			if id == deleted {
				continue
			}
			if seen[id] != 1 {
				t.Errorf("session %s skipped", id)
			}
		}
		if seen[deleted] != 0 {
			t.Errorf("session deleted before its page was read is listed")
		}
		for i := 1; i < len(order); i++ {
			if indexMember(&order[i-1]) < indexMember(&order[i]) {
				t.Errorf("not newest first at %d", i)
			}
		}
	})
}
