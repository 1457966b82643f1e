package signing

import (
	"strings"
	"testing"
)

func TestVerifyHexHMAC(t *testing.T) {
	secret, msg := []byte("admin-secret"), []byte(`{"ref_id":"user-42"}`)
	const want = "1e1e461ec6a61a02d95de08cce5da97d41755401153631860d26bf0e63b8a303" // openssl dgst -sha256 -hmac
	if got := HexHMAC(secret, msg); got != want {
		t.Fatalf("HexHMAC = %q, want %q", got, want)
	}
	tests := []struct {
		name   string
		secret []byte
		msg    []byte
		sig    string
		want   bool
	}{
		{"lower", secret, msg, want, true},
		{"upper", secret, msg, strings.ToUpper(want), true},
		{"wrong secret", []byte("other"), msg, want, false},
		{"tampered msg", secret, []byte(`{"ref_id":"user-43"}`), want, false},
		{"empty", secret, msg, "", false},
		{"short", secret, msg, want[:62], false},
		{"long", secret, msg, want + "00", false},
		{"trailing space", secret, msg, want[:63] + " ", false},
		{"bad hex", secret, msg, "zz" + want[2:], false},
		{"empty msg", secret, nil, HexHMAC(secret, nil), true},
		{"empty secret", nil, msg, HexHMAC(nil, msg), true},
	}
	for _, tt := range tests {
		if got := VerifyHexHMAC(tt.secret, tt.msg, tt.sig); got != tt.want {
			t.Errorf("%s: VerifyHexHMAC = %v, want %v", tt.name, got, tt.want)
		}
	}
}
