package signing

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustKey(t testing.TB, s string) Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	return k
}

func signedHeader(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, sig)
	return h
}

func TestVerify(t *testing.T) {
	oldKey, newKey, otherKey := mustKey(t, vectorSecret), mustKey(t, GenerateSecret()), mustKey(t, GenerateSecret())
	sk, pk := GenerateKeyPair()
	edPriv, edPub := mustKey(t, sk), mustKey(t, pk)
	_, otherPub := GenerateKeyPair()
	edOther := mustKey(t, otherPub)

	const id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
	body := []byte(`{"type":"session.approved"}`)
	sent := time.Unix(1674087231, 0)
	v1 := Sign(id, sent, body, oldKey)
	v1New := Sign(id, sent, body, newKey)
	v1a := Sign(id, sent, body, edPriv)

	type verifyCase struct {
		name    string
		header  http.Header
		body    []byte    // nil: body
		now     time.Time // zero: sent
		keys    []Key
		tol     time.Duration
		wantErr error // nil: success
	}
	tests := []verifyCase{
		{name: "valid v1", header: signedHeader(id, sent, v1), keys: []Key{oldKey}},
		{name: "wrong secret", header: signedHeader(id, sent, v1), keys: []Key{otherKey}, wantErr: ErrNoMatchingSignature},
		{name: "tampered body", header: signedHeader(id, sent, v1), body: []byte(`{"type":"session.declined"}`), keys: []Key{oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "tampered id", header: signedHeader("msg_other", sent, v1), keys: []Key{oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "tampered timestamp", header: signedHeader(id, sent.Add(time.Second), v1), keys: []Key{oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "too old", header: signedHeader(id, sent, v1), now: sent.Add(DefaultTolerance + time.Second), keys: []Key{oldKey}, wantErr: ErrTimestampOutOfRange},
		{name: "too new", header: signedHeader(id, sent, v1), now: sent.Add(-DefaultTolerance - time.Second), keys: []Key{oldKey}, wantErr: ErrTimestampOutOfRange},
		{name: "at tolerance past", header: signedHeader(id, sent, v1), now: sent.Add(DefaultTolerance), keys: []Key{oldKey}},
		{name: "at tolerance future", header: signedHeader(id, sent, v1), now: sent.Add(-DefaultTolerance), keys: []Key{oldKey}},
		{name: "custom tolerance refuses", header: signedHeader(id, sent, v1), now: sent.Add(2 * time.Second), keys: []Key{oldKey}, tol: time.Second, wantErr: ErrTimestampOutOfRange},
		{name: "custom tolerance accepts", header: signedHeader(id, sent, v1), now: sent.Add(9 * time.Minute), keys: []Key{oldKey}, tol: 10 * time.Minute},
		{name: "rotation: signed old, verifier new+old", header: signedHeader(id, sent, v1), keys: []Key{newKey, oldKey}},
		{name: "rotation: signed new, verifier old+new", header: signedHeader(id, sent, v1New), keys: []Key{oldKey, newKey}},
		{name: "rotation: signed both, verifier new only", header: signedHeader(id, sent, Sign(id, sent, body, oldKey, newKey)), keys: []Key{newKey}},
		{name: "rotation: signed both, verifier old only", header: signedHeader(id, sent, Sign(id, sent, body, oldKey, newKey)), keys: []Key{oldKey}},
		{name: "multiple entries with junk", header: signedHeader(id, sent, "v2,abc  v1,Zm9v v1a,xx "+v1+" v1"), keys: []Key{oldKey}},
		{name: "signature split over header lines", header: func() http.Header {
			h := signedHeader(id, sent, "v1,bad")
			h.Add(HeaderSignature, v1)
			return h
		}(), keys: []Key{oldKey}},
		{name: "v1a with whpk", header: signedHeader(id, sent, v1a), keys: []Key{edPub}},
		{name: "v1a with whsk", header: signedHeader(id, sent, v1a), keys: []Key{edPriv}},
		{name: "v1a with other whpk", header: signedHeader(id, sent, v1a), keys: []Key{edOther}, wantErr: ErrNoMatchingSignature},
		{name: "v1a tampered body", header: signedHeader(id, sent, v1a), body: []byte("{}"), keys: []Key{edPub}, wantErr: ErrNoMatchingSignature},
		{name: "v1 and v1a, whpk verifier", header: signedHeader(id, sent, v1+" "+v1a), keys: []Key{edPub}},
		{name: "v1 only, whpk verifier", header: signedHeader(id, sent, v1), keys: []Key{edPub}, wantErr: ErrNoMatchingSignature},
		{name: "v1a entry under v1 version", header: signedHeader(id, sent, "v1,"+strings.TrimPrefix(v1a, "v1a,")), keys: []Key{edPub, oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "v1 entry under v2 version", header: signedHeader(id, sent, "v2,"+strings.TrimPrefix(v1, "v1,")), keys: []Key{oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "missing comma", header: signedHeader(id, sent, "v1"+strings.TrimPrefix(v1, "v1,")), keys: []Key{oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "bare version", header: signedHeader(id, sent, "v1, v1a,"), keys: []Key{oldKey, edPub}, wantErr: ErrNoMatchingSignature},
		{name: "lowercase map keys", header: http.Header{
			"webhook-id":        {id},
			"webhook-timestamp": {strconv.FormatInt(sent.Unix(), 10)},
			"webhook-signature": {v1},
		}, keys: []Key{oldKey}},
		{name: "entries past the cap ignored", header: signedHeader(id, sent, strings.Repeat("v1,x ", maxSignatures)+v1), keys: []Key{oldKey}, wantErr: ErrNoMatchingSignature},
		{name: "missing id", header: signedHeader("", sent, v1), keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "blank id", header: signedHeader("  ", sent, v1), keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "missing signature", header: signedHeader(id, sent, ""), keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "blank signature", header: signedHeader(id, sent, " \t "), keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "missing timestamp", header: func() http.Header {
			h := signedHeader(id, sent, v1)
			h.Del(HeaderTimestamp)
			return h
		}(), keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "no headers", header: http.Header{}, keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "nil header", header: nil, keys: []Key{oldKey}, wantErr: ErrMissingHeaders},
		{name: "no keys", header: signedHeader(id, sent, v1), wantErr: errNoKeys},
		{name: "zero key", header: signedHeader(id, sent, v1), keys: []Key{{}}, wantErr: errNoKeys},
	}
	for _, ts := range []string{"abc", "-1674087231", "+1674087231", "1.674087231e9", "1674087231.0", "0x63c88e3f", "9999999999999999999", "1 674087231"} {
		h := signedHeader(id, sent, v1)
		h.Set(HeaderTimestamp, ts)
		tests = append(tests, verifyCase{name: "timestamp " + ts, header: h, keys: []Key{oldKey}, wantErr: ErrInvalidTimestamp})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, now := tt.body, tt.now
			if b == nil {
				b = body
			}
			if now.IsZero() {
				now = sent
			}
			err := Verifier{Keys: tt.keys, Tolerance: tt.tol}.Verify(tt.header, b, now)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify() = %v, want %v", err, tt.wantErr)
			}
			if tt.tol == 0 {
				if err2 := Verify(tt.header, b, now, tt.keys...); (err2 == nil) != (err == nil) {
					t.Errorf("Verify func = %v, Verifier.Verify = %v", err2, err)
				}
			}
		})
	}
}

func TestSign(t *testing.T) {
	sym := mustKey(t, vectorSecret)
	sk, pk := GenerateKeyPair()
	priv, pub := mustKey(t, sk), mustKey(t, pk)
	ts := time.Unix(1614265330, 999_000_000) // sub-second part is dropped
	body := []byte("{}")

	got := Sign("msg_1", ts, body, priv, pub, Key{}, sym)
	entries := strings.Split(got, " ")
	if len(entries) != 2 || !strings.HasPrefix(entries[0], "v1a,") || !strings.HasPrefix(entries[1], "v1,") {
		t.Fatalf("Sign = %q, want a v1a then a v1 entry", got)
	}
	if got := Sign("msg_1", ts, body, pub); got != "" {
		t.Errorf("Sign with only a public key = %q, want empty", got)
	}
	if got := Sign("msg_1", ts, body); got != "" {
		t.Errorf("Sign with no keys = %q, want empty", got)
	}
	if err := Verify(signedHeader("msg_1", ts, got), body, ts, pub); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestSigner(t *testing.T) {
	sym, sym2 := mustKey(t, vectorSecret), mustKey(t, GenerateSecret())
	sk, pk := GenerateKeyPair()
	priv, pub := mustKey(t, sk), mustKey(t, pk)

	for _, tt := range []struct {
		name string
		keys []Key
	}{
		{"no keys", nil},
		{"public key", []Key{sym, pub}},
		{"zero key", []Key{{}}},
	} {
		if _, err := NewSigner("k", tt.keys...); err == nil {
			t.Errorf("NewSigner(%s) succeeded, want error", tt.name)
		} else if strings.Contains(err.Error(), strings.TrimPrefix(vectorSecret, "whsec_")) {
			t.Errorf("NewSigner error leaks a secret: %v", err)
		}
	}

	// An ed25519 key first: X-HMAC-SIGNATURE still uses the first whsec_ key.
	s, err := NewSigner("api-key-1", priv, sym, sym2)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	body := []byte(`{"type":"session.created"}`)
	h := http.Header{}
	if err := s.SetHeaders(h, "msg_abc", now, body); err != nil {
		t.Fatal(err)
	}
	if got, want := h.Get(HeaderSignature), Sign("msg_abc", now, body, priv, sym, sym2); got != want {
		t.Errorf("webhook-signature = %q, want %q", got, want)
	}
	if got := h.Get(HeaderTimestamp); got != "1700000000" {
		t.Errorf("webhook-timestamp = %q", got)
	}
	if got := h.Get(HeaderAuthClient); got != "api-key-1" {
		t.Errorf("X-AUTH-CLIENT = %q", got)
	}
	if got, want := h.Get(HeaderHMACSignature), HexHMAC(sym.secret, body); got != want {
		t.Errorf("X-HMAC-SIGNATURE = %q, want %q", got, want)
	}
	for _, k := range []Key{pub, sym, sym2} {
		if err := Verify(h, body, now, k); err != nil {
			t.Errorf("Verify with %v: %v", k, err)
		}
	}
	if err := VerifyHMACHeader(h, body, sym2, sym); err != nil {
		t.Errorf("VerifyHMACHeader: %v", err)
	}
	if err := VerifyHMACHeader(h, body, sym2); !errors.Is(err, ErrNoMatchingSignature) {
		t.Errorf("VerifyHMACHeader with a non-first key = %v, want ErrNoMatchingSignature", err)
	}

	// Without a symmetric key or API key those headers are left out.
	s, err = NewSigner("", priv)
	if err != nil {
		t.Fatal(err)
	}
	h = http.Header{}
	if err := s.SetHeaders(h, "msg_abc", now, body); err != nil {
		t.Fatal(err)
	}
	if h.Get(HeaderHMACSignature) != "" || h.Get(HeaderAuthClient) != "" {
		t.Errorf("headers = %v, want no X-HMAC-SIGNATURE or X-AUTH-CLIENT", h)
	}

	for _, id := range []string{"", "msg.1", "msg 1", "msg\n1", "msg\x001", "msg\u00e91"} {
		if err := s.SetHeaders(http.Header{}, id, now, body); err == nil {
			t.Errorf("SetHeaders(id %q) succeeded, want error", id)
		}
	}
}

func TestVerifyHMACHeader(t *testing.T) {
	sym := mustKey(t, vectorSecret)
	_, pk := GenerateKeyPair()
	body := []byte(`{"test": 2432232314}`)
	good := HexHMAC(sym.secret, body)
	tests := []struct {
		name    string
		sig     string
		body    []byte
		keys    []Key
		wantErr error
	}{
		{"valid", good, body, []Key{sym}, nil},
		{"upper case", strings.ToUpper(good), body, []Key{sym}, nil},
		{"tampered body", good, []byte(`{"test": 1}`), []Key{sym}, ErrNoMatchingSignature},
		{"wrong key", good, body, []Key{mustKey(t, GenerateSecret())}, ErrNoMatchingSignature},
		{"junk", "v1,abc", body, []Key{sym}, ErrNoMatchingSignature},
		{"missing", "", body, []Key{sym}, ErrMissingHeaders},
		{"only public key", good, body, []Key{mustKey(t, pk)}, errNoKeys},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.sig != "" {
			h.Set(HeaderHMACSignature, tt.sig)
		}
		err := VerifyHMACHeader(h, tt.body, tt.keys...)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%s: VerifyHMACHeader() = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

// TestSentinelTexts keeps format verbs out of sentinel errors.
func TestSentinelTexts(t *testing.T) {
	for _, err := range []error{ErrInvalidKey, ErrMissingHeaders, ErrInvalidTimestamp, ErrTimestampOutOfRange, ErrNoMatchingSignature, errNoKeys} {
		if strings.Contains(err.Error(), "%") {
			t.Errorf("sentinel %q contains a format verb", err)
		}
	}
}
