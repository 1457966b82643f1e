package signing

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // Standard Webhooks test vector

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestParseKey(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	badPriv := append(ed25519.PrivateKey(nil), priv...)
	badPriv[63] ^= 1
	secret24 := make([]byte, 24)

	tests := []struct {
		name, in    string
		wantVersion string // "" means an error is wanted
		wantSign    bool
	}{
		{"whsec", vectorSecret, "v1", true},
		{"no prefix", strings.TrimPrefix(vectorSecret, "whsec_"), "v1", true},
		{"surrounding space", " " + vectorSecret + "\n", "v1", true},
		{"unpadded", "whsec_" + base64.RawStdEncoding.EncodeToString(make([]byte, 32)), "v1", true},
		{"min size", "whsec_" + b64(secret24), "v1", true},
		{"whsk 64", "whsk_" + b64(priv), "v1a", true},
		{"whsk seed", "whsk_" + b64(seed), "v1a", true},
		{"whpk", "whpk_" + b64(pub), "v1a", false},

		{"empty", "", "", false},
		{"whsec empty", "whsec_", "", false},
		{"whsec bad base64", "whsec_!!!!not-base64!!!!!!!!!!!!!!!!", "", false},
		{"whsec url base64", "whsec_" + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe}), "", false},
		{"whsec too short", "whsec_" + b64(secret24[:23]), "", false},
		{"whsk empty", "whsk_", "", false},
		{"whsk bad base64", "whsk_***", "", false},
		{"whsk wrong size", "whsk_" + b64(seed[:31]), "", false},
		{"whsk public half mismatch", "whsk_" + b64(badPriv), "", false},
		{"whpk wrong size", "whpk_" + b64(seed[:31]), "", false},
		{"whpk bad base64", "whpk_@@@@", "", false},
		{"unknown prefix", "whxx_" + b64(seed), "", false},
		{"space inside", "whsec_MfKQ9r8GKYqr TwjUPD8ILPZIo2LaLaSw", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.in)
			if tt.wantVersion == "" {
				if err == nil {
					t.Fatalf("ParseKey(%q) = %v, want error", tt.in, k)
				}
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("error %q does not wrap ErrInvalidKey", err)
				}
				if body := strings.TrimSpace(tt.in); len(body) > 6 && strings.Contains(err.Error(), body[5:]) {
					t.Errorf("error %q contains the key text", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if got := k.Version(); got != tt.wantVersion {
				t.Errorf("Version() = %q, want %q", got, tt.wantVersion)
			}
			if got := k.CanSign(); got != tt.wantSign {
				t.Errorf("CanSign() = %v, want %v", got, tt.wantSign)
			}
		})
	}
}

// TestKeyFormatRedacts checks that no fmt verb prints secret material.
func TestKeyFormatRedacts(t *testing.T) {
	priv, pub := GenerateKeyPair()
	for _, s := range []string{GenerateSecret(), priv} {
		k, err := ParseKey(s)
		if err != nil {
			t.Fatal(err)
		}
		body := s[strings.IndexByte(s, '_')+1:]
		raw, _ := base64.StdEncoding.DecodeString(body)
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out := fmt.Sprintf(verb, k) + fmt.Sprintf(verb, []Key{k}) + fmt.Sprintf(verb, struct{ K Key }{k})
			dec := strings.Trim(fmt.Sprint(raw[:6]), "[]")
			if strings.Contains(out, body) || strings.Contains(out, fmt.Sprintf("%x", raw[:8])) || strings.Contains(out, dec) {
				t.Errorf("Sprintf(%q) leaks key material: %s", verb, out)
			}
			if !strings.Contains(out, "<redacted>") {
				t.Errorf("Sprintf(%q) = %s, want <redacted>", verb, out)
			}
		}
	}
	k, _ := ParseKey(pub)
	if got := k.String(); got != pub {
		t.Errorf("public key String() = %q, want %q", got, pub)
	}
	if got := (Key{}).String(); got != "<zero key>" {
		t.Errorf("zero Key String() = %q", got)
	}
}

func TestGenerate(t *testing.T) {
	s1, s2 := GenerateSecret(), GenerateSecret()
	if s1 == s2 || !strings.HasPrefix(s1, "whsec_") {
		t.Fatalf("GenerateSecret() = %q, %q", s1, s2)
	}
	k, err := ParseKey(s1)
	if err != nil || len(k.secret) != 32 {
		t.Fatalf("ParseKey(GenerateSecret()) = %d bytes, %v", len(k.secret), err)
	}

	priv, pub := GenerateKeyPair()
	sk, err := ParseKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParseKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if sk.PublicKey() != pub || pk.PublicKey() != pub {
		t.Errorf("PublicKey() = %q / %q, want %q", sk.PublicKey(), pk.PublicKey(), pub)
	}
	if (Key{secret: k.secret}).PublicKey() != "" {
		t.Error("symmetric key has a PublicKey")
	}
}
