package keyspace

import (
	"strings"
	"testing"
)

// TestSlotKnownValues checks Slot against slots Redis itself reports
// (CLUSTER KEYSLOT).
func TestSlotKnownValues(t *testing.T) {
	for key, want := range map[string]int{
		"":          0,
		"foo":       12182,
		"bar":       5061,
		"hello":     866,
		"123456789": 12739, // CRC16/XMODEM check value 0x31C3 mod 16384
		"sessiond":  4884,
		"user1000":  3443,
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestTagsSpreadOverSlots: every shard's slot lies in its own part of the
// slot range, so three masters with equal ranges get four shards each.
func TestTagsSpreadOverSlots(t *testing.T) {
	perMaster := map[int]int{}
	seen := map[string]bool{}
	for i := range Shards {
		tag := Tag(Shard(i))
		if seen[tag] {
			t.Fatalf("tag %q used twice", tag)
		}
		seen[tag] = true
		slot := Slot(tag)
		if part := slot * Shards / SlotCount; part != i {
			t.Errorf("shard %d (tag %q) is in slot %d, part %d", i, tag, slot, part)
		}
		// redis-cli --cluster create with 3 masters: 0-5460, 5461-10922, 10923-16383.
		switch {
		case slot <= 5460:
			perMaster[0]++
		case slot <= 10922:
			perMaster[1]++
		default:
			perMaster[2]++
		}
	}
	for m := range 3 {
		if perMaster[m] != Shards/3 {
			t.Errorf("master %d holds %d shards, want %d", m, perMaster[m], Shards/3)
		}
	}
}

func TestKeysCarryNamespaceAndTag(t *testing.T) {
	s := New("t1")
	k := s.RateLimit("delete", "client-a")
	if !strings.HasPrefix(k, "t1:{"+Tag(ShardOf("client-a"))+"}:") {
		t.Errorf("RateLimit key %q", k)
	}
	if New("").Namespace() != DefaultNamespace {
		t.Error("empty namespace is not the default")
	}
}

// TestWebhookQueuesSpread: the webhook queues fall on the three masters of
// an evenly split cluster, for any namespace.
func TestWebhookQueuesSpread(t *testing.T) {
	for _, ns := range []string{"", "t1", "prod-eu"} {
		qs := New(ns).WebhookQueues()
		for k, q := range qs {
			if part := Slot(q) * QueueSplit / SlotCount; part != k {
				t.Errorf("namespace %q: queue %s (slot %d) is in part %d, want %d", ns, q, Slot(q), part, k)
			}
		}
		seen := map[string]bool{}
		for sh := range Shards {
			seen[WebhookQueue(qs, Shard(sh))] = true
		}
		if len(seen) != QueueSplit {
			t.Errorf("namespace %q: shards use %d queues, want %d", ns, len(seen), QueueSplit)
		}
	}
}

func TestSessionShard(t *testing.T) {
	for sh := range Shards {
		id := "3d0c2f6e-6a3b-4d2b-9a51-0d9e1c7b2a1" + string(ShardHex(Shard(sh)))
		if got, ok := SessionShard(id); !ok || got != Shard(sh) {
			t.Errorf("SessionShard(%s) = %d, %v; want %d", id, got, ok, sh)
		}
	}
	for _, id := range []string{"", "3d0c2f6e-6a3b-4d2b-9a51-0d9e1c7b2a1f", "x", "3d0c2f6e-6a3b-4d2b-9a51-0d9e1c7b2a1G"} {
		if _, ok := SessionShard(id); ok {
			t.Errorf("SessionShard(%q) ok", id)
		}
	}
}

// An Idempotency-Key's Redis key is named after its hash: a key a client
// built from a ref_id or an email does not show in Redis's key names.
func TestIdempotencyKeyIsHashed(t *testing.T) {
	ks := New("")
	a := ks.Idempotency("client", "user@example.com-ref-42")
	if strings.Contains(a, "example") || strings.Contains(a, "ref-42") {
		t.Errorf("Idempotency key %q names the client's key", a)
	}
	if b := ks.Idempotency("client", "user@example.com-ref-43"); a == b {
		t.Errorf("two Idempotency-Keys share the Redis key %q", a)
	}
	if c := ks.Idempotency("other", "user@example.com-ref-42"); a == c {
		t.Errorf("two clients share the Redis key %q", a)
	}
	if again := ks.Idempotency("client", "user@example.com-ref-42"); again != a {
		t.Errorf("the same key maps to %q and %q", a, again)
	}
}
