package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
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

// FuzzEgressGuard checks that the dial-time guard never panics on an
// address, that an allowed network always wins, and that it refuses every
// loopback, private, link-local and unspecified address otherwise.
func FuzzEgressGuard(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1}, uint16(443))
	f.Add([]byte{10, 1, 2, 3}, uint16(80))
	f.Add([]byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(8080))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 0, 1}, uint16(1))
	f.Add([]byte{93, 184, 216, 34}, uint16(443))
	allow := netip.MustParsePrefix("10.1.0.0/16")
	g := egressGuard{allow: []netip.Prefix{allow}}
	f.Fuzz(func(t *testing.T, raw []byte, port uint16) {
		addr, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		err := g.control(context.Background(), "tcp", netip.AddrPortFrom(addr, port).String(), nil)
		a := addr.Unmap()
		switch {
		case allow.Contains(a):
			if err != nil {
				t.Fatalf("%s is allowed but refused: %v", addr, err)
			}
		case a.IsLoopback(), a.IsPrivate(), a.IsLinkLocalUnicast(), a.IsUnspecified(), a.IsMulticast():
			if !errors.Is(err, ErrBlockedAddress) {
				t.Fatalf("%s not refused: %v", addr, err)
			}
		}
	})
}
