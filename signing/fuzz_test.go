package signing

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Fixed fuzz keys: the Standard Webhooks vector secret and an ed25519 key
// from a fixed seed, so fuzz findings replay deterministically.
var (
	fuzzSym  = must(ParseKey(vectorSecret))
	fuzzPriv = must(ParseKey("whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="))
	fuzzPub  = must(ParseKey(fuzzPriv.PublicKey()))
)

func must(k Key, err error) Key {
	if err != nil {
		panic(err) // fixed test keys only
	}
	return k
}

// FuzzVerify checks that Verify never panics on arbitrary headers, accepts
// only a header carrying the expected signature, always accepts a valid
// signature, and rejects any one-byte change of the body.
func FuzzVerify(f *testing.F) {
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), int64(1614265330), uint(0))
	f.Add("msg_1", "1614265330", "v1a,AAAA v2,xx  v1", []byte(""), int64(1614265330), uint(3))
	f.Add(" ", "", "", []byte("{}"), int64(0), uint(7))
	f.Add("id.with.dots", "0001614265330", "v1,=", []byte{0xff, 0x00}, int64(1<<40), uint(1))
	f.Fuzz(func(t *testing.T, id, tsHeader, sigHeader string, body []byte, unix int64, pos uint) {
		unix %= 1 << 40 // keep now a sane time
		if unix < 0 {
			unix = -unix
		}
		now := time.Unix(unix, 0)
		keys := []Key{fuzzSym, fuzzPub}

		// Arbitrary headers: no panic, and success only with a real signature.
		h := http.Header{HeaderID: {id}, HeaderTimestamp: {tsHeader}, HeaderSignature: {sigHeader}}
		if err := Verify(h, body, now, keys...); err == nil {
			ts, _ := parseTimestamp(tsHeader)
			want := strings.Fields(Sign(id, time.Unix(ts, 0), body, fuzzSym, fuzzPriv))
			if !strings.Contains(sigHeader, want[0]) && !strings.Contains(sigHeader, want[1]) {
				t.Fatalf("Verify accepted %q without a valid signature", sigHeader)
			}
		}

		// A valid signature always verifies, with either key.
		if strings.TrimSpace(id) == "" {
			return
		}
		for _, signer := range []Key{fuzzSym, fuzzPriv} {
			h := signedHeader(id, now, Sign(id, now, body, signer))
			if err := Verify(h, body, now, keys...); err != nil {
				t.Fatalf("Verify(valid %s) = %v", signer.Version(), err)
			}
			// Any one-byte change of the body is rejected.
			changed := bytes.Clone(body)
			if len(changed) == 0 {
				changed = append(changed, byte(pos))
			} else {
				changed[pos%uint(len(changed))] ^= byte(pos%255) + 1
			}
			if err := Verify(h, changed, now, keys...); !errors.Is(err, ErrNoMatchingSignature) {
				t.Fatalf("Verify(changed body %s) = %v, want ErrNoMatchingSignature", signer.Version(), err)
			}
		}
	})
}

// FuzzParseKey checks that ParseKey never panics, wraps ErrInvalidKey, keeps
// the key text out of errors and String, and that parsed keys round-trip.
func FuzzParseKey(f *testing.F) {
	f.Add(vectorSecret)
	f.Add(strings.TrimPrefix(vectorSecret, "whsec_"))
	f.Add("whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	f.Add(fuzzPriv.PublicKey())
	f.Add("whsk_" + strings.Repeat("A", 86))
	f.Add("whpk_")
	f.Add("whsec_====")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		body := s
		if i := strings.IndexByte(s, '_'); i >= 0 {
			body = s[i+1:]
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("error %q does not wrap ErrInvalidKey", err)
			}
			if len(body) >= 16 && strings.Contains(err.Error(), body) {
				t.Fatalf("error %q contains the key text", err)
			}
			if k.Version() != "" {
				t.Fatalf("failed ParseKey returned a usable key")
			}
			return
		}
		if k.Version() == "" {
			t.Fatalf("ParseKey(%q) returned a zero Key", s)
		}
		if k.CanSign() && strings.Contains(k.String(), strings.TrimSpace(body)) {
			t.Fatalf("String() = %q contains the secret", k.String())
		}
		now := time.Unix(1614265330, 0)
		sig := Sign("msg_1", now, []byte("{}"), k)
		if k.CanSign() != (sig != "") {
			t.Fatalf("CanSign() = %v but Sign = %q", k.CanSign(), sig)
		}
		if k.CanSign() {
			if err := Verify(signedHeader("msg_1", now, sig), []byte("{}"), now, k); err != nil {
				t.Fatalf("Verify(own signature) = %v", err)
			}
		}
		if pk := k.PublicKey(); pk != "" {
			p, err := ParseKey(pk)
			if err != nil || p.PublicKey() != pk {
				t.Fatalf("PublicKey() %q does not round-trip: %v", pk, err)
			}
		}
	})
}

// FuzzVerifyHexHMAC checks that VerifyHexHMAC never panics, accepts its own
// signature in either case, and accepts nothing else.
func FuzzVerifyHexHMAC(f *testing.F) {
	f.Add([]byte("admin-secret"), []byte(`{"ref_id":"user-42"}`), "1e1e461ec6a61a02d95de08cce5da97d41755401153631860d26bf0e63b8a303")
	f.Add([]byte{}, []byte{}, "")
	f.Add([]byte("k"), []byte("m"), strings.Repeat("zz", 32))
	f.Fuzz(func(t *testing.T, secret, msg []byte, sig string) {
		want := HexHMAC(secret, msg)
		if VerifyHexHMAC(secret, msg, sig) && !strings.EqualFold(sig, want) {
			t.Fatalf("VerifyHexHMAC accepted %q, want only %q", sig, want)
		}
		if !VerifyHexHMAC(secret, msg, want) || !VerifyHexHMAC(secret, msg, strings.ToUpper(want)) {
			t.Fatalf("VerifyHexHMAC rejected its own signature %q", want)
		}
		if len(msg) > 0 {
			changed := bytes.Clone(msg)
			changed[0] ^= 1
			if VerifyHexHMAC(secret, changed, want) {
				t.Fatalf("VerifyHexHMAC accepted a changed message")
			}
		}
	})
}
