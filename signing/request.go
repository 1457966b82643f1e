package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// Admin API request signatures, scheme v2. A signature binds the method,
// the request target (path and query as sent), the body and the time, so a
// captured request can be neither replayed (the server remembers nonces)
// nor moved to another route:
//
//	X-AUTH-CLIENT:    <api key>
//	X-TIMESTAMP:      <unix seconds>
//	X-NONCE:          <16-64 of A-Z a-z 0-9 _ ->
//	X-HMAC-SIGNATURE: v2=<lowercase hex HMAC-SHA256(secret, canonical)>
//
//	canonical = "v2" LF timestamp LF nonce LF METHOD LF request-target LF hex(sha256(body))

// Header names of a signed admin request (besides HeaderAuthClient and
// HeaderHMACSignature).
const (
	HeaderRequestTimestamp = "X-TIMESTAMP"
	HeaderNonce            = "X-NONCE"
)

// RequestSignaturePrefix starts every v2 X-HMAC-SIGNATURE value.
const RequestSignaturePrefix = "v2="

// Nonce length bounds, in characters.
const (
	MinNonceLen = 16
	MaxNonceLen = 64
)

// maxTimestampDigits bounds X-TIMESTAMP so that it fits an int64 with room.
const maxTimestampDigits = 12

// CanonicalRequest returns the string a v2 signature covers. bodySum is the
// SHA-256 of the raw body (of the empty string when there is none); target
// is the path and query exactly as sent on the request line.
func CanonicalRequest(method, target string, bodySum [sha256.Size]byte, ts int64, nonce string) []byte {
	b := make([]byte, 0, 3+20+len(nonce)+len(method)+len(target)+2*sha256.Size+5)
	b = append(b, "v2\n"...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '\n')
	b = append(b, nonce...)
	b = append(b, '\n')
	b = append(b, method...)
	b = append(b, '\n')
	b = append(b, target...)
	b = append(b, '\n')
	return hex.AppendEncode(b, bodySum[:])
}

// SignRequest returns the X-HMAC-SIGNATURE value ("v2=<hex>") of a request.
func SignRequest(secret []byte, method, target string, body []byte, ts int64, nonce string) string {
	return RequestSignaturePrefix + hex.EncodeToString(sum(secret, CanonicalRequest(method, target, sha256.Sum256(body), ts, nonce)))
}

// SetRequestHeaders signs a request for the admin API at now with a fresh
// nonce and sets X-AUTH-CLIENT, X-TIMESTAMP, X-NONCE and X-HMAC-SIGNATURE.
// target is the path and query exactly as the request line will carry them
// (url.URL.RequestURI).
func SetRequestHeaders(h http.Header, key string, secret []byte, method, target string, body []byte, now time.Time) {
	ts, nonce := now.Unix(), NewNonce()
	h.Set(HeaderAuthClient, key)
	h.Set(HeaderRequestTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderHMACSignature, SignRequest(secret, method, target, body, ts, nonce))
}

// NewNonce returns a random nonce of 22 URL-safe characters (128 bits).
func NewNonce() string {
	var b [16]byte
	rand.Read(b[:]) // never fails since Go 1.24
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ValidNonce reports whether s is 16 to 64 characters of A-Z a-z 0-9 _ -.
func ValidNonce(s string) bool {
	if len(s) < MinNonceLen || len(s) > MaxNonceLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ParseRequestTimestamp parses X-TIMESTAMP: unix seconds, 1 to 12 decimal
// digits and nothing else.
func ParseRequestTimestamp(s string) (int64, bool) {
	if s == "" || len(s) > maxTimestampDigits {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ParseRequestSignature parses a v2 X-HMAC-SIGNATURE value: "v2=" and 64
// lowercase hex digits. ok is false for anything else.
func ParseRequestSignature(s string) (mac []byte, ok bool) {
	if len(s) != len(RequestSignaturePrefix)+2*sha256.Size || s[:len(RequestSignaturePrefix)] != RequestSignaturePrefix {
		return nil, false
	}
	hexPart := s[len(RequestSignaturePrefix):]
	for i := 0; i < len(hexPart); i++ {
		if c := hexPart[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, false
		}
	}
	mac, err := hex.DecodeString(hexPart)
	return mac, err == nil
}

// VerifyRequest reports whether mac (from ParseRequestSignature) is the v2
// signature of canonical (from CanonicalRequest) under any of secrets.
// Every secret is tried, and each comparison is constant time, so the time
// taken does not tell which secret matched.
func VerifyRequest(secrets [][]byte, canonical, mac []byte) bool {
	ok := false
	for _, s := range secrets {
		if hmac.Equal(mac, sum(s, canonical)) {
			ok = true
		}
	}
	return ok
}
