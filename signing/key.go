package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Key prefixes defined by Standard Webhooks.
const (
	prefixSecret  = "whsec_" // symmetric HMAC-SHA256 secret, signs v1
	prefixPrivate = "whsk_"  // ed25519 private key, signs v1a
	prefixPublic  = "whpk_"  // ed25519 public key, verifies v1a
)

// Signature versions of a webhook-signature entry.
const (
	versionHMAC    = "v1"
	versionEd25519 = "v1a"
)

// MinSecretSize is the smallest symmetric secret, in decoded bytes, that
// ParseKey accepts (the Standard Webhooks minimum).
const MinSecretSize = 24

// ErrInvalidKey is wrapped by every ParseKey error.
var ErrInvalidKey = errors.New("invalid key")

// Key is a parsed signing or verification key: a whsec_ secret (v1), a whsk_
// ed25519 private key (v1a, signs and verifies) or a whpk_ ed25519 public key
// (v1a, verifies only). The zero Key is unusable and ignored by Sign and Verify.
type Key struct {
	secret  []byte             // v1 HMAC key; nil unless symmetric
	private ed25519.PrivateKey // nil unless whsk_
	public  ed25519.PublicKey  // nil unless whsk_ or whpk_
}

// ParseKey parses a "whsec_<base64>" secret (the prefix is optional), a
// "whsk_<base64>" ed25519 private key (64-byte key or 32-byte seed) or a
// "whpk_<base64>" ed25519 public key. Base64 is standard, padded or not;
// surrounding whitespace is ignored. Errors wrap ErrInvalidKey and never
// contain the key text.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, prefixPrivate):
		b, ok := decodeBase64(s[len(prefixPrivate):])
		if !ok {
			return Key{}, keyError("whsk_ key is not valid base64")
		}
		var priv ed25519.PrivateKey
		switch len(b) {
		case ed25519.SeedSize:
			priv = ed25519.NewKeyFromSeed(b)
		case ed25519.PrivateKeySize:
			priv = ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
			if !bytes.Equal(priv[ed25519.SeedSize:], b[ed25519.SeedSize:]) {
				return Key{}, keyError("whsk_ key's public half does not match its seed")
			}
		default:
			return Key{}, keyError("whsk_ key must decode to 32 or 64 bytes")
		}
		return Key{private: priv, public: priv.Public().(ed25519.PublicKey)}, nil
	case strings.HasPrefix(s, prefixPublic):
		b, ok := decodeBase64(s[len(prefixPublic):])
		if !ok {
			return Key{}, keyError("whpk_ key is not valid base64")
		}
		if len(b) != ed25519.PublicKeySize {
			return Key{}, keyError("whpk_ key must decode to 32 bytes")
		}
		return Key{public: ed25519.PublicKey(b)}, nil
	default:
		b, ok := decodeBase64(strings.TrimPrefix(s, prefixSecret))
		if !ok {
			return Key{}, keyError("whsec_ secret is not valid base64")
		}
		if len(b) < MinSecretSize {
			return Key{}, keyError("whsec_ secret must decode to at least 24 bytes")
		}
		return Key{secret: b}, nil
	}
}

func keyError(reason string) error {
	return fmt.Errorf("parse key: %w: %s", ErrInvalidKey, reason)
}

// decodeBase64 decodes standard base64, padded or not.
func decodeBase64(s string) ([]byte, bool) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, true
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	return b, err == nil
}

// GenerateSecret returns a new "whsec_" secret of 32 random bytes.
func GenerateSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails since Go 1.24
	return prefixSecret + base64.StdEncoding.EncodeToString(b)
}

// GenerateKeyPair returns a new ed25519 key pair as a "whsk_" private key
// (64 bytes: seed and public key) and the matching "whpk_" public key.
func GenerateKeyPair() (private, public string) {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed) // never fails since Go 1.24
	priv := ed25519.NewKeyFromSeed(seed)
	return prefixPrivate + base64.StdEncoding.EncodeToString(priv),
		prefixPublic + base64.StdEncoding.EncodeToString(priv[ed25519.SeedSize:])
}

// Version returns the signature version the key produces or checks: "v1",
// "v1a", or "" for the zero Key.
func (k Key) Version() string {
	switch {
	case k.secret != nil:
		return versionHMAC
	case k.public != nil:
		return versionEd25519
	}
	return ""
}

// CanSign reports whether the key can sign (whsec_ or whsk_, not whpk_).
func (k Key) CanSign() bool { return k.secret != nil || k.private != nil }

// PublicKey returns the "whpk_" form of an ed25519 key, to hand to receivers,
// or "" for a symmetric or zero Key.
func (k Key) PublicKey() string {
	if k.public == nil {
		return ""
	}
	return prefixPublic + base64.StdEncoding.EncodeToString(k.public)
}

// String describes the key without its secret: "whsec_<redacted>",
// "whsk_<redacted>", the full "whpk_..." public key, or "<zero key>".
func (k Key) String() string {
	switch {
	case k.secret != nil:
		return prefixSecret + "<redacted>"
	case k.private != nil:
		return prefixPrivate + "<redacted>"
	case k.public != nil:
		return k.PublicKey()
	}
	return "<zero key>"
}

// Format writes k.String() for every verb, so no fmt verb (%x, %d, %#v)
// can print key material.
func (k Key) Format(f fmt.State, verb rune) { fmt.Fprint(f, k.String()) }

// sign returns the webhook-signature entry of content for this key, or "" if
// the key cannot sign.
func (k Key) sign(content []byte) string {
	switch {
	case k.secret != nil:
		return versionHMAC + "," + base64.StdEncoding.EncodeToString(sum(k.secret, content))
	case k.private != nil:
		return versionEd25519 + "," + base64.StdEncoding.EncodeToString(ed25519.Sign(k.private, content))
	}
	return ""
}

// sum returns HMAC-SHA256(key, msg).
func sum(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}
