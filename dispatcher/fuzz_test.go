package dispatcher

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetryAfter checks that a receiver's Retry-After never panics
// the parser, never gives a negative wait, reads delta-seconds exactly,
// and stays within the schedule once clamped.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", " 7 ", "99999999999999999999", "-1", "1.5", "",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Wednesday, 21-Oct-15 07:28:00 GMT", "Wed Oct 21 07:28:00 2015", "\x00"} {
		f.Add(s, int64(1445412480))
	}
	s := newSchedule(DefaultRetrySchedule, 0)
	f.Fuzz(func(t *testing.T, v string, unix int64) {
		now := time.Unix(unix%(1<<35), 0)
		d, ok := parseRetryAfter(v, now)
		if !ok {
			if d != 0 {
				t.Fatalf("parseRetryAfter(%q) = %v, false", v, d)
			}
			return
		}
		if d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, negative", v, d)
		}
		if trimmed := strings.TrimSpace(v); digits(trimmed) && len(trimmed) <= maxRetryAfterDigits {
			n, _ := strconv.ParseInt(trimmed, 10, 64)
			if d != time.Duration(n)*time.Second {
				t.Fatalf("parseRetryAfter(%q) = %v, want %ds", v, d, n)
			}
		}
		if c := s.clamp(d); c < 5*time.Second || c > 10*time.Hour {
			t.Fatalf("clamp(%v) = %v outside the schedule", d, c)
		}
	})
}

// FuzzParseDeliveryID checks that any path segment either parses into
// parts that build the same id, or is refused, and that accepted ids are
// URL-safe.
func FuzzParseDeliveryID(f *testing.F) {
	f.Add("6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11~evt_0123~default")
	f.Add("a~b~c")
	f.Add("~~")
	f.Add("a~b~c~d")
	f.Add("a%2Fb~c~d")
	f.Fuzz(func(t *testing.T, id string) {
		s, e, ep, ok := parseDeliveryID(id)
		if !ok {
			return
		}
		if got := deliveryID(s, e, ep); got != id {
			t.Fatalf("deliveryID(parse(%q)) = %q", id, got)
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '~') {
				t.Fatalf("accepted id %q has a character outside the URL-safe set", id)
			}
		}
	})
}

// FuzzDecodePayload checks that a task payload (which the Asynq UI can
// edit) never panics the decoder, and that whatever it accepts encodes
// back to an equivalent payload.
func FuzzDecodePayload(f *testing.F) {
	good, _ := (&taskPayload{Delivery: "s~e~p", Session: "s", Event: "e", Type: "t", Endpoint: "p", Body: []byte(`{"a":1}`)}).encode()
	f.Add(good)
	f.Add([]byte("{}\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"delivery":"s~e~p","session":"s","event":"e","endpoint":"p","base":-1}` + "\nx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePayload(b)
		if err != nil {
			return
		}
		again, err := p.encode()
		if err != nil {
			t.Fatal(err)
		}
		q, err := decodePayload(again)
		if err != nil {
			t.Fatalf("re-encoded payload does not decode: %v", err)
		}
		if !bytes.Equal(q.Body, p.Body) || q.Delivery != p.Delivery || q.Base != p.Base || q.Replay != p.Replay {
			t.Fatalf("round trip changed the payload: %+v vs %+v", q, p)
		}
	})
}
