package signing_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// vector is one entry of a testdata/*.json golden file.
type vector struct {
	Secret     string `json:"secret"`      // whsec_ (standard-webhooks-v1.json)
	SeedHex    string `json:"seed_hex"`    // ed25519 seed (ed25519-v1a.json)
	PrivateKey string `json:"private_key"` // whsk_
	PublicKey  string `json:"public_key"`  // whpk_
	MsgID      string `json:"msg_id"`
	Timestamp  int64  `json:"timestamp"`
	Payload    string `json:"payload"`
	Signature  string `json:"signature"`
}

func loadVectors(t *testing.T, name string) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	if len(f.Vectors) == 0 {
		t.Fatalf("%s has no vectors", name)
	}
	return f.Vectors
}

func mustParseKey(t testing.TB, s string) signing.Key {
	t.Helper()
	k, err := signing.ParseKey(s)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	return k
}

func vectorHeader(v vector) http.Header {
	h := http.Header{}
	h.Set(signing.HeaderID, v.MsgID)
	h.Set(signing.HeaderTimestamp, strconv.FormatInt(v.Timestamp, 10))
	h.Set(signing.HeaderSignature, v.Signature)
	return h
}

// TestStandardWebhooksVector checks Sign and Verify against the vector
// published with the Standard Webhooks specification.
func TestStandardWebhooksVector(t *testing.T) {
	for _, v := range loadVectors(t, "standard-webhooks-v1.json") {
		ts := time.Unix(v.Timestamp, 0)
		for _, secret := range []string{v.Secret, strings.TrimPrefix(v.Secret, "whsec_")} {
			key := mustParseKey(t, secret)
			if got := signing.Sign(v.MsgID, ts, []byte(v.Payload), key); got != v.Signature {
				t.Errorf("Sign = %q, want %q", got, v.Signature)
			}
			if err := signing.Verify(vectorHeader(v), []byte(v.Payload), ts, key); err != nil {
				t.Errorf("Verify: %v", err)
			}
		}
	}
}

// TestEd25519Vector checks the v1a vector generated from a fixed seed, first
// with crypto/ed25519 alone, then through the package.
func TestEd25519Vector(t *testing.T) {
	for _, v := range loadVectors(t, "ed25519-v1a.json") {
		seed, err := hex.DecodeString(v.SeedHex)
		if err != nil {
			t.Fatal(err)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		content := []byte(v.MsgID + "." + strconv.FormatInt(v.Timestamp, 10) + "." + v.Payload)

		// Independent check: the stored keys and signature match crypto/ed25519.
		if want := "whsk_" + base64.StdEncoding.EncodeToString(priv); v.PrivateKey != want {
			t.Fatalf("private_key = %q, want %q", v.PrivateKey, want)
		}
		if want := "whpk_" + base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)); v.PublicKey != want {
			t.Fatalf("public_key = %q, want %q", v.PublicKey, want)
		}
		sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v.Signature, "v1a,"))
		if err != nil || !ed25519.Verify(priv.Public().(ed25519.PublicKey), content, sig) {
			t.Fatalf("crypto/ed25519 rejects the vector signature (decode err %v)", err)
		}

		ts := time.Unix(v.Timestamp, 0)
		seedKey := "whsk_" + base64.StdEncoding.EncodeToString(seed)
		for _, s := range []string{v.PrivateKey, seedKey} {
			if got := signing.Sign(v.MsgID, ts, []byte(v.Payload), mustParseKey(t, s)); got != v.Signature {
				t.Errorf("Sign = %q, want %q", got, v.Signature)
			}
		}
		for _, s := range []string{v.PublicKey, v.PrivateKey} {
			if err := signing.Verify(vectorHeader(v), []byte(v.Payload), ts, mustParseKey(t, s)); err != nil {
				t.Errorf("Verify with %s: %v", s[:5], err)
			}
		}
		if got := mustParseKey(t, v.PrivateKey).PublicKey(); got != v.PublicKey {
			t.Errorf("PublicKey() = %q, want %q", got, v.PublicKey)
		}
	}
}
