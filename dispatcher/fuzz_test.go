package dispatcher

import (
	"encoding/json"
	"math"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// The fuzz tests' oracles are written from the specification, not from
// the code they check: regular expressions for the identifiers, math/big
// for numbers, the RFC's three date layouts for Retry-After.

// oracleDeliveryID is the delivery id grammar: three parts of 1 to 80 of
// [A-Za-z0-9_-], joined by "~".
var oracleDeliveryID = regexp.MustCompile(`^([A-Za-z0-9_-]{1,80})~([A-Za-z0-9_-]{1,80})~([A-Za-z0-9_-]{1,80})$`)

// oracleStreamID is a Redis stream entry id: two decimal numbers that
// each fit 64 unsigned bits.
var oracleStreamID = regexp.MustCompile(`^([0-9]+)-([0-9]+)$`)

var oracleDigits = regexp.MustCompile(`^[0-9]+$`)

var maxUint64 = new(big.Int).SetUint64(math.MaxUint64)

func oracleCursorOK(s string) bool {
	m := oracleStreamID.FindStringSubmatch(s)
	if m == nil {
		return false
	}
	for _, part := range m[1:] {
		n, ok := new(big.Int).SetString(part, 10)
		if !ok || n.Cmp(maxUint64) > 0 {
			return false
		}
	}
	return true
}

// oracleRetryAfter is RFC 9110's Retry-After: delta-seconds (read up to
// 999999999, beyond which every delay is clamped anyway) or an HTTP date,
// counted from now (a past date is 0), with surrounding white space.
func oracleRetryAfter(v string, now time.Time) (time.Duration, bool) {
	runes := []rune(v)
	for len(runes) > 0 && unicode.IsSpace(runes[0]) {
		runes = runes[1:]
	}
	for len(runes) > 0 && unicode.IsSpace(runes[len(runes)-1]) {
		runes = runes[:len(runes)-1]
	}
	v = string(runes)
	if oracleDigits.MatchString(v) {
		n, _ := new(big.Int).SetString(v, 10)
		if limit := big.NewInt(999999999); n.Cmp(limit) > 0 {
			n = limit
		}
		return time.Duration(n.Int64()) * time.Second, true
	}
	for _, layout := range []string{"Mon, 02 Jan 2006 15:04:05 GMT", "Monday, 02-Jan-06 15:04:05 MST", "Mon Jan _2 15:04:05 2006"} {
		if t, err := time.Parse(layout, v); err == nil {
			return max(t.Sub(now), 0), true
		}
	}
	return 0, false
}

// FuzzParseRetryAfter checks parseRetryAfter against the oracle, and that
// whatever it accepts, clamped, stays within the schedule.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", " 7 ", "0000000005", "99999999999999999999", "-1", "+1", "1.5", "", "\u00a05\u2003",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Wednesday, 21-Oct-15 07:28:00 GMT", "Wed Oct 21 07:28:00 2015", "\x00"} {
		f.Add(s, int64(1445412480))
	}
	s := newSchedule(DefaultRetrySchedule, 0)
	f.Fuzz(func(t *testing.T, v string, unix int64) {
		now := time.Unix(unix%(1<<35), 0)
		got, ok := parseRetryAfter(v, now)
		want, wantOK := oracleRetryAfter(v, now)
		if got != want || ok != wantOK {
			t.Fatalf("parseRetryAfter(%q) = %v, %v; want %v, %v", v, got, ok, want, wantOK)
		}
		if ok {
			if c := s.clamp(got); c < 5*time.Second || c > 10*time.Hour {
				t.Fatalf("clamp(%v) = %v outside the schedule", got, c)
			}
		}
	})
}

// FuzzParseDeliveryID checks parseDeliveryID against the grammar, and that
// the parts it returns build the same id.
func FuzzParseDeliveryID(f *testing.F) {
	f.Add("6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11~evt_0123~default")
	f.Add("a~b~c")
	f.Add("~~")
	f.Add("a~b~c~d")
	f.Add("a%2Fb~c~d")
	f.Add("a~b~c\n")
	f.Fuzz(func(t *testing.T, id string) {
		s, e, ep, ok := parseDeliveryID(id)
		m := oracleDeliveryID.FindStringSubmatch(id)
		if ok != (m != nil) {
			t.Fatalf("parseDeliveryID(%q) ok = %v, the grammar says %v", id, ok, m != nil)
		}
		if !ok {
			return
		}
		if s != m[1] || e != m[2] || ep != m[3] {
			t.Fatalf("parseDeliveryID(%q) = %q %q %q, want %q %q %q", id, s, e, ep, m[1], m[2], m[3])
		}
		if got := deliveryID(s, e, ep); got != id {
			t.Fatalf("deliveryID(parse(%q)) = %q", id, got)
		}
	})
}

// FuzzDecodePayload checks the task payload decoder (an operator can edit
// a payload in the Asynq UI): a payload written from fields is accepted
// exactly when the fields are valid, and gives them back; any bytes it
// accepts hold valid fields and survive a round trip.
func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte(`{"d":"s~e~p","c":"1718000000000-0","n":1,"f":1}`), "s~e~p", "1718000000000-0", int64(1), int64(1), false)
	f.Add([]byte(`{"d":"s~e~p","c":"1-0","r":true}`), "6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11~evt_0123~default", "0-0", int64(3), int64(0), true)
	f.Add([]byte(`{"D":"s~e~p","C":"1-0"}`), "s~e", "18446744073709551616-0", int64(-1), int64(0), false)
	f.Add([]byte("{}\n"), "", "", int64(0), int64(-5), false)
	f.Add([]byte(`{"d":"s~e~p","c":"1-0","n":1e2}`), "a~b~c", "1-x", int64(0), int64(0), false)
	f.Fuzz(func(t *testing.T, raw []byte, delivery, cursor string, base, failed int64, replay bool) {
		// Written from fields.
		b, err := json.Marshal(map[string]any{"d": delivery, "c": cursor, "n": base, "f": failed, "r": replay})
		if err != nil {
			t.Fatal(err)
		}
		p, err := decodePayload(b)
		valid := oracleDeliveryID.MatchString(delivery) && oracleCursorOK(cursor) && base >= 0 && failed >= 0
		if (err == nil) != valid {
			t.Fatalf("decodePayload(%s) = %v; the fields are valid: %v", b, err, valid)
		}
		if err == nil && (p.Delivery != delivery || p.Cursor != cursor || int64(p.Base) != base || int64(p.Failed) != failed || p.Replay != replay) {
			t.Fatalf("decodePayload(%s) = %+v", b, p)
		}

		// Any bytes.
		p, err = decodePayload(raw)
		if err != nil {
			return
		}
		if !oracleDeliveryID.MatchString(p.Delivery) || !oracleCursorOK(p.Cursor) || p.Base < 0 || p.Failed < 0 {
			t.Fatalf("decodePayload(%q) accepted %+v", raw, p)
		}
		again, err := p.encode()
		if err != nil {
			t.Fatal(err)
		}
		q, err := decodePayload(again)
		if err != nil {
			t.Fatalf("re-encoded payload %s does not decode: %v", again, err)
		}
		if *q != *p {
			t.Fatalf("round trip changed the payload: %+v, was %+v", q, p)
		}
	})
}

// oracleHeaderName is RFC 9110's token, 1 to 64 characters.
var oracleHeaderName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")

// oracleOwnHeaders are the headers sessiond sets (or the transport does)
// and a custom header may not: named in full, or by prefix.
var (
	oracleOwnHeaders = []string{
		"Host", "X-HMAC-SIGNATURE", "X-AUTH-CLIENT", "User-Agent", "Connection", "Keep-Alive",
		"Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Trailers",
		"Transfer-Encoding", "Upgrade",
	}
	oracleOwnPrefixes = regexp.MustCompile(`(?i)^(webhook-|content-)`)
)

// oracleHeaderValue is 1 to 1024 bytes of valid UTF-8 without C0 or C1
// controls (tab allowed inside), starting and ending with a visible
// character.
func oracleHeaderValue(v string) bool {
	if len(v) == 0 || len(v) > 1024 || !utf8.ValidString(v) || strings.ContainsRune(v, utf8.RuneError) {
		return false
	}
	for _, r := range v {
		if r != '\t' && (unicode.In(r, unicode.Cc)) {
			return false
		}
	}
	first, _ := utf8.DecodeRuneInString(v)
	last, _ := utf8.DecodeLastRuneInString(v)
	return !unicode.IsSpace(first) && !unicode.IsSpace(last)
}

// FuzzCheckHeader checks the custom headers of an endpoint against an
// oracle written from RFC 9110 and the contract's list of sessiond's own
// headers; an accepted header also survives an http.Header round trip.
func FuzzCheckHeader(f *testing.F) {
	for _, seed := range [][2]string{
		{"X-Tenant", "acme"}, {"webhook-id", "x"}, {"Content-Length", "1"}, {"Host", "evil"},
		{"x-hmac-signature", "00"}, {"X Tenant", "a"}, {"X-Tenant", " padded "}, {"X-Tenant", "a\r\nb"},
		{"Authorization", "Bearer abc.def"}, {"X-É", "v"}, {"X-Tenant", "\xff"}, {"TE", "trailers"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		own := oracleOwnPrefixes.MatchString(name)
		for _, h := range oracleOwnHeaders {
			own = own || strings.EqualFold(h, name)
		}
		want := oracleHeaderName.MatchString(name) && !own && oracleHeaderValue(value)
		err := checkHeader(name, value)
		if (err == nil) != want {
			t.Fatalf("checkHeader(%q, %q) = %v, oracle accepts: %v", name, value, err, want)
		}
		if err != nil {
			if strings.Contains(err.Error(), value) && len(value) > 3 && !strings.Contains(name, value) {
				t.Fatalf("the error quotes the value: %v", err)
			}
			return
		}
		h := http.Header{}
		h.Set(name, value)
		if got := h.Get(name); got != value {
			t.Fatalf("http.Header round trip of an accepted header: %q, want %q", got, value)
		}
	})
}
