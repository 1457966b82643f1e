package signing

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names set by Signer and read by Verify and VerifyHMACHeader.
const (
	HeaderID            = "webhook-id"        // message id, stable across retries
	HeaderTimestamp     = "webhook-timestamp" // unix seconds of the attempt
	HeaderSignature     = "webhook-signature" // space-separated "v1,..." / "v1a,..." entries
	HeaderAuthClient    = "X-AUTH-CLIENT"     // the API key (Veriff style)
	HeaderHMACSignature = "X-HMAC-SIGNATURE"  // lowercase hex HMAC-SHA256 of the body
)

// Sign returns the webhook-signature header value for a message: one entry
// per key that can sign, space separated, in the order given ("v1,<base64
// HMAC-SHA256>" for a whsec_ key, "v1a,<base64 ed25519>" for a whsk_ key).
// Public and zero keys are skipped. The signed content is
// msgID + "." + unix seconds of ts + "." + body; msgID should contain no ".".
func Sign(msgID string, ts time.Time, body []byte, keys ...Key) string {
	content := signedContent(msgID, ts.Unix(), body)
	var b strings.Builder
	for _, k := range keys {
		entry := k.sign(content)
		if entry == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(entry)
	}
	return b.String()
}

// signedContent returns msgID.unix.body.
func signedContent(msgID string, unix int64, body []byte) []byte {
	b := make([]byte, 0, len(msgID)+len(body)+22)
	b = append(b, msgID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, unix, 10)
	b = append(b, '.')
	return append(b, body...)
}

// Signer signs the deliveries of one webhook endpoint. It is immutable and
// safe for concurrent use.
type Signer struct {
	apiKey  string
	keys    []Key
	hmacKey []byte // first symmetric secret, for X-HMAC-SIGNATURE; nil if none
}

// NewSigner returns a Signer that signs with every key, in order (list the
// current key first during a rotation), and sends apiKey as X-AUTH-CLIENT
// unless it is empty. It fails if there is no key or a key cannot sign.
func NewSigner(apiKey string, keys ...Key) (*Signer, error) {
	if len(keys) == 0 {
		return nil, errors.New("new signer: no keys")
	}
	s := &Signer{apiKey: apiKey, keys: append([]Key(nil), keys...)}
	for i, k := range keys {
		if !k.CanSign() {
			return nil, fmt.Errorf("new signer: key %d (%s) cannot sign", i, k)
		}
		if s.hmacKey == nil && k.secret != nil {
			s.hmacKey = k.secret
		}
	}
	return s, nil
}

// SetHeaders sets webhook-id, webhook-timestamp and webhook-signature for one
// delivery attempt at ts, X-AUTH-CLIENT when the Signer has an API key, and
// X-HMAC-SIGNATURE (hex HMAC-SHA256 of body keyed with the first whsec_
// secret) when it has a symmetric key. msgID must be non-empty printable
// ASCII without spaces or ".". Call it once per attempt with the current time.
func (s *Signer) SetHeaders(h http.Header, msgID string, ts time.Time, body []byte) error {
	if !validMsgID(msgID) {
		return errors.New("set webhook headers: message id must be non-empty printable ASCII without spaces or dots")
	}
	h.Set(HeaderID, msgID)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(msgID, ts, body, s.keys...))
	if s.apiKey != "" {
		h.Set(HeaderAuthClient, s.apiKey)
	}
	if s.hmacKey != nil {
		h.Set(HeaderHMACSignature, HexHMAC(s.hmacKey, body))
	}
	return nil
}

func validMsgID(id string) bool {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '.' {
			return false
		}
	}
	return id != ""
}
