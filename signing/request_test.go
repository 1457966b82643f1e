package signing_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sessiond/sessiond/signing"
)

type requestVector struct {
	Method     string `json:"method"`
	Target     string `json:"target"`
	Body       string `json:"body"`
	Timestamp  int64  `json:"timestamp"`
	Nonce      string `json:"nonce"`
	BodySHA256 string `json:"body_sha256"`
	Signature  string `json:"signature"`
}

// TestRequestGolden checks v2 signatures against vectors computed outside
// Go (openssl over a canonical string written by hand).
func TestRequestGolden(t *testing.T) {
	b, err := os.ReadFile("testdata/request-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Secret  string          `json:"secret"`
		Vectors []requestVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &f); err != nil || len(f.Vectors) == 0 {
		t.Fatalf("decode vectors: %v (%d vectors)", err, len(f.Vectors))
	}
	secret := []byte(f.Secret)
	for _, v := range f.Vectors {
		t.Run(v.Method+" "+v.Target, func(t *testing.T) {
			if got := signing.SignRequest(secret, v.Method, v.Target, []byte(v.Body), v.Timestamp, v.Nonce); got != v.Signature {
				t.Errorf("SignRequest = %s, want %s", got, v.Signature)
			}
			sum := sha256.Sum256([]byte(v.Body))
			if hex.EncodeToString(sum[:]) != v.BodySHA256 {
				t.Fatalf("vector's body hash does not match its body")
			}
			mac, ok := signing.ParseRequestSignature(v.Signature)
			if !ok {
				t.Fatalf("ParseRequestSignature(%q) failed", v.Signature)
			}
			canonical := signing.CanonicalRequest(v.Method, v.Target, sum, v.Timestamp, v.Nonce)
			other := []byte("another-secret-0123456789")
			if !signing.VerifyRequest([][]byte{other, secret}, canonical, mac) {
				t.Error("VerifyRequest refused the vector with its secret listed second")
			}
			if signing.VerifyRequest([][]byte{other}, canonical, mac) {
				t.Error("VerifyRequest accepted the vector without its secret")
			}
		})
	}
}

// TestRequestSignatureBindsEveryPart: changing any signed part changes the
// signature.
func TestRequestSignatureBindsEveryPart(t *testing.T) {
	secret := []byte("demo-secret-change-me")
	base := func() (string, string, []byte, int64, string) {
		return "POST", "/v1/sessions/x/decision", []byte(`{"status":"approved"}`), 1700000000, "nonce-nonce-nonce-1"
	}
	m, tg, body, ts, n := base()
	want := signing.SignRequest(secret, m, tg, body, ts, n)
	cases := map[string]string{
		"method": signing.SignRequest(secret, "PATCH", tg, body, ts, n),
		"target": signing.SignRequest(secret, m, "/v1/sessions/y/decision", body, ts, n),
		"query":  signing.SignRequest(secret, m, tg+"?a=1", body, ts, n),
		"body":   signing.SignRequest(secret, m, tg, []byte(`{"status":"declined"}`), ts, n),
		"empty":  signing.SignRequest(secret, m, tg, nil, ts, n),
		"time":   signing.SignRequest(secret, m, tg, body, ts+1, n),
		"nonce":  signing.SignRequest(secret, m, tg, body, ts, "nonce-nonce-nonce-2"),
		"secret": signing.SignRequest([]byte("other-secret-change-me"), m, tg, body, ts, n),
	}
	for part, got := range cases {
		if got == want {
			t.Errorf("changing the %s left the signature unchanged", part)
		}
	}
}

func TestSetRequestHeaders(t *testing.T) {
	h := http.Header{}
	secret := []byte("demo-secret-change-me")
	now := time.Unix(1700000123, 0)
	signing.SetRequestHeaders(h, "demo", secret, "GET", "/v1/events?limit=5", nil, now)
	if h.Get(signing.HeaderAuthClient) != "demo" || h.Get(signing.HeaderRequestTimestamp) != "1700000123" {
		t.Fatalf("headers = %v", h)
	}
	nonce := h.Get(signing.HeaderNonce)
	if !signing.ValidNonce(nonce) {
		t.Fatalf("nonce %q is not valid", nonce)
	}
	if want := oracleSign(secret, "GET", "/v1/events?limit=5", nil, 1700000123, nonce); h.Get(signing.HeaderHMACSignature) != want {
		t.Errorf("signature = %s, want %s", h.Get(signing.HeaderHMACSignature), want)
	}
	h2 := http.Header{}
	signing.SetRequestHeaders(h2, "demo", secret, "GET", "/v1/events?limit=5", nil, now)
	if h2.Get(signing.HeaderNonce) == nonce {
		t.Error("two signings used the same nonce")
	}
}

func TestParseRequestParts(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"0123456789abcdef", true},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ_-0123", true},
		{"0123456789abcde", false},                                                 // 15
		{string(make([]byte, 65)), false},                                          // too long
		{"0123456789abcdef!", false},                                               // bad character
		{"0123456789abcdéf", false},                                                // non-ASCII
		{"0123456789 abcdef", false},                                               // space
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true}, // 64
	} {
		if got := signing.ValidNonce(tc.in); got != tc.ok {
			t.Errorf("ValidNonce(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1700000000", 1700000000, true},
		{"0", 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5", 0, false},
		{" 1", 0, false},
		{"1234567890123", 0, false},
	} {
		got, ok := signing.ParseRequestTimestamp(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseRequestTimestamp(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	good := "v2=" + hex.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{good, true},
		{good[3:], false},                // no prefix
		{"v1=" + good[3:], false},        // wrong version
		{good + "0", false},              // too long
		{good[:len(good)-1], false},      // too short
		{"v2=" + "AB" + good[5:], false}, // upper case hex
		{"v2=" + "zz" + good[5:], false},
	} {
		if _, ok := signing.ParseRequestSignature(tc.in); ok != tc.ok {
			t.Errorf("ParseRequestSignature(%q) ok = %v, want %v", tc.in, ok, tc.ok)
		}
	}
}

// oracleSign is the v2 signature computed from the contract's text, sharing
// no code with the package: fmt builds the canonical string.
func oracleSign(secret []byte, method, target string, body []byte, ts int64, nonce string) string {
	bodySum := sha256.Sum256(body)
	canonical := fmt.Sprintf("v2\n%d\n%s\n%s\n%s\n%x", ts, nonce, method, target, bodySum)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(canonical))
	return "v2=" + hex.EncodeToString(m.Sum(nil))
}

// FuzzVerifyRequest checks the v2 parsers and verifier against the oracle:
// a signature made by the oracle always verifies, anything the verifier
// accepts is the oracle's signature, and a change of any part is refused.
func FuzzVerifyRequest(f *testing.F) {
	f.Add("POST", "/v1/sessions", []byte(`{"ref_id":"a"}`), "1700000000", "nonce-nonce-nonce-1", "v2=00", uint8(0))
	f.Add("GET", "/v1/sessions?status=approved&limit=10", []byte{}, "0", "ABCDEFGHIJKLMNOP", "", uint8(3))
	f.Add("DELETE", "/v1/sessions/\x00", []byte{0xff}, "999999999999", "_-_-_-_-_-_-_-_-", "v2="+hex.EncodeToString(make([]byte, 32)), uint8(9))
	secret := []byte("fuzz-secret-0123456789")
	f.Fuzz(func(t *testing.T, method, target string, body []byte, tsHeader, nonce, sigHeader string, flip uint8) {
		ts, tsOK := signing.ParseRequestTimestamp(tsHeader)
		if tsOK {
			if want, err := strconv.ParseInt(tsHeader, 10, 64); err != nil || want != ts || want < 0 {
				t.Fatalf("ParseRequestTimestamp(%q) = %d, oracle %d (%v)", tsHeader, ts, want, err)
			}
		}
		canonical := signing.CanonicalRequest(method, target, sha256.Sum256(body), ts, nonce)
		// Arbitrary signature headers: accepted only when they are the oracle's.
		if mac, ok := signing.ParseRequestSignature(sigHeader); ok {
			want := oracleSign(secret, method, target, body, ts, nonce)
			if got := signing.VerifyRequest([][]byte{secret}, canonical, mac); got != (sigHeader == want) {
				t.Fatalf("VerifyRequest(%q) = %v, oracle says %v", sigHeader, got, sigHeader == want)
			}
		}
		// The oracle's signature verifies and matches SignRequest.
		good := oracleSign(secret, method, target, body, ts, nonce)
		if got := signing.SignRequest(secret, method, target, body, ts, nonce); got != good {
			t.Fatalf("SignRequest = %s, oracle %s", got, good)
		}
		mac, ok := signing.ParseRequestSignature(good)
		if !ok || !signing.VerifyRequest([][]byte{secret}, canonical, mac) {
			t.Fatal("the oracle's signature did not verify")
		}
		// One flipped bit of the MAC is refused.
		bad := append([]byte(nil), mac...)
		bad[int(flip)%len(bad)] ^= 1 << (flip % 8)
		if signing.VerifyRequest([][]byte{secret}, canonical, bad) {
			t.Fatal("a changed MAC verified")
		}
		// Another body is refused.
		other := append(append([]byte(nil), body...), flip)
		if signing.VerifyRequest([][]byte{secret}, signing.CanonicalRequest(method, target, sha256.Sum256(other), ts, nonce), mac) {
			t.Fatal("the signature verified for another body")
		}
	})
}
