package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// HexHMAC returns the lowercase hex HMAC-SHA256 of msg keyed with secret: the
// X-HMAC-SIGNATURE value for an admin request or a webhook body.
func HexHMAC(secret, msg []byte) string {
	return hex.EncodeToString(sum(secret, msg))
}

// VerifyHexHMAC reports whether signature is the hex HMAC-SHA256 of msg keyed
// with secret. Either hex case is accepted; a wrong length or bad hex is false.
// The comparison is constant time.
func VerifyHexHMAC(secret, msg []byte, signature string) bool {
	if len(signature) != 2*sha256.Size {
		return false
	}
	got, err := hex.DecodeString(signature)
	if err != nil {
		return false
	}
	return hmac.Equal(got, sum(secret, msg))
}
