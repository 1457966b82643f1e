package signing

import (
	"crypto/ed25519"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors returned (wrapped) by Verify and VerifyHMACHeader.
var (
	ErrMissingHeaders      = errors.New("missing required header")
	ErrInvalidTimestamp    = errors.New("invalid webhook-timestamp")
	ErrTimestampOutOfRange = errors.New("webhook-timestamp outside tolerance")
	ErrNoMatchingSignature = errors.New("no matching signature")
)

// DefaultTolerance is how far webhook-timestamp may be from now, in either
// direction, when Verifier.Tolerance is zero (the Standard Webhooks default).
const DefaultTolerance = 5 * time.Minute

// maxSignatures bounds the webhook-signature entries examined, so a junk
// header cannot cost many ed25519 verifications.
const maxSignatures = 32

// errNoKeys reports a caller that passed no usable key.
var errNoKeys = errors.New("no usable key")

// Verifier checks Standard Webhooks signatures against a set of keys.
type Verifier struct {
	// Keys are the accepted keys: whsec_ secrets check v1 entries, whsk_ and
	// whpk_ keys check v1a entries. Any entry matching any key is accepted,
	// so old and new keys can both be listed during a rotation.
	Keys []Key
	// Tolerance is the largest accepted distance between webhook-timestamp and
	// now, in the past or the future; zero or negative means DefaultTolerance.
	Tolerance time.Duration
}

// Verify checks a received webhook with DefaultTolerance; see Verifier.Verify.
func Verify(h http.Header, body []byte, now time.Time, keys ...Key) error {
	return Verifier{Keys: keys}.Verify(h, body, now)
}

// Verify checks the webhook-id, webhook-timestamp and webhook-signature
// headers of a delivery whose raw body is body. It returns nil if the
// timestamp is within the tolerance of now and any v1 or v1a signature entry
// matches any key; unknown versions and malformed entries are ignored, and
// at most the first 32 entries are examined. Errors wrap ErrMissingHeaders,
// ErrInvalidTimestamp, ErrTimestampOutOfRange or ErrNoMatchingSignature.
// Receivers should also dedupe deliveries by webhook-id.
func (v Verifier) Verify(h http.Header, body []byte, now time.Time) error {
	if !anyKey(v.Keys, func(k Key) bool { return k.public != nil || k.secret != nil }) {
		return fmt.Errorf("verify webhook: %w", errNoKeys)
	}
	id := firstValue(h, HeaderID)
	tsText := firstValue(h, HeaderTimestamp)
	entries := strings.Fields(strings.Join(headerValues(h, HeaderSignature), " "))
	switch {
	case strings.TrimSpace(id) == "":
		return fmt.Errorf("verify webhook: %w: %s", ErrMissingHeaders, HeaderID)
	case strings.TrimSpace(tsText) == "":
		return fmt.Errorf("verify webhook: %w: %s", ErrMissingHeaders, HeaderTimestamp)
	case len(entries) == 0:
		return fmt.Errorf("verify webhook: %w: %s", ErrMissingHeaders, HeaderSignature)
	}
	ts, ok := parseTimestamp(tsText)
	if !ok {
		return fmt.Errorf("verify webhook: %w", ErrInvalidTimestamp)
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tol || d < -tol {
		return fmt.Errorf("verify webhook: %w", ErrTimestampOutOfRange)
	}

	content := signedContent(id, ts, body)
	var macs [][]byte // expected v1 entries, computed on first use
	if len(entries) > maxSignatures {
		entries = entries[:maxSignatures]
	}
	for _, e := range entries {
		version, sig, ok := strings.Cut(e, ",")
		if !ok {
			continue
		}
		switch version {
		case versionHMAC:
			if macs == nil {
				for _, k := range v.Keys {
					if k.secret != nil {
						macs = append(macs, []byte(base64.StdEncoding.EncodeToString(sum(k.secret, content))))
					}
				}
			}
			for _, want := range macs {
				if hmac.Equal([]byte(sig), want) {
					return nil
				}
			}
		case versionEd25519:
			raw, err := base64.StdEncoding.Strict().DecodeString(sig)
			if err != nil || len(raw) != ed25519.SignatureSize {
				continue
			}
			for _, k := range v.Keys {
				if k.public != nil && ed25519.Verify(k.public, content, raw) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("verify webhook: %w", ErrNoMatchingSignature)
}

// VerifyHMACHeader checks the X-HMAC-SIGNATURE header of a delivery against
// the whsec_ keys: it must be the hex HMAC-SHA256 of body keyed with any of
// them. It covers the body only, with no timestamp, so it cannot stop
// replays; prefer Verify. Errors wrap ErrMissingHeaders or
// ErrNoMatchingSignature.
func VerifyHMACHeader(h http.Header, body []byte, keys ...Key) error {
	sig := strings.TrimSpace(firstValue(h, HeaderHMACSignature))
	if sig == "" {
		return fmt.Errorf("verify hmac header: %w: %s", ErrMissingHeaders, HeaderHMACSignature)
	}
	if !anyKey(keys, func(k Key) bool { return k.secret != nil }) {
		return fmt.Errorf("verify hmac header: %w", errNoKeys)
	}
	for _, k := range keys {
		if k.secret != nil && VerifyHexHMAC(k.secret, body, sig) {
			return nil
		}
	}
	return fmt.Errorf("verify hmac header: %w", ErrNoMatchingSignature)
}

// parseTimestamp parses unix seconds: 1 to 18 ASCII digits, surrounding
// spaces ignored. 18 digits keep time.Unix far from overflow.
func parseTimestamp(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 0 || len(s) > 18 {
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

// headerValues returns the values of name, also when h was built with a
// non-canonical key such as the spec's lowercase "webhook-id".
func headerValues(h http.Header, name string) []string {
	if v := h.Values(name); len(v) > 0 {
		return v
	}
	return h[name]
}

func firstValue(h http.Header, name string) string {
	if v := headerValues(h, name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func anyKey(keys []Key, ok func(Key) bool) bool {
	for _, k := range keys {
		if ok(k) {
			return true
		}
	}
	return false
}
