// Package keyspace names every Redis key sessiond uses, in one layout for
// every topology (one Redis, Sentinel, Cluster).
//
// Keys are spread over a fixed number of logical shards. Each shard has a
// hash tag, so all of a shard's keys live in one cluster slot and one
// transaction may touch any of them. A session lives in the shard of its
// ref_id: its record, personal data, token, ref_id entry, index and due
// entries and outbox stream share that shard, so a transition is atomic in
// one slot. The shard tags are chosen so that their slots spread evenly
// over the slot range, and so over the masters of a cluster that splits
// the range evenly (as redis-cli --cluster create does).
//
// Every key starts with the namespace ("sessiond" by default) and a colon,
// so several deployments, or parallel tests, can share one Redis.
package keyspace

import (
	"hash/fnv"
	"strconv"
)

// Shards is the number of logical shards. It is part of the stored layout:
// session ids and tokens name their shard.
const Shards = 12

// Shard is a logical shard, 0 <= Shard < Shards.
type Shard int

// DefaultNamespace starts every key unless configured otherwise.
const DefaultNamespace = "sessiond"

// Space builds the keys of one namespace. The zero Space is not usable:
// use New.
type Space struct {
	ns string // namespace and ":"
}

// New returns the key space of namespace ("" means DefaultNamespace).
func New(namespace string) Space {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return Space{ns: namespace + ":"}
}

// Namespace returns the namespace, without the colon.
func (s Space) Namespace() string { return s.ns[:len(s.ns)-1] }

// Prefix is what every key of the space starts with.
func (s Space) Prefix() string { return s.ns }

// ShardOf returns the shard of a string (a ref_id, a client key): FNV-1a
// modulo Shards.
func ShardOf(v string) Shard {
	h := fnv.New32a()
	h.Write([]byte(v))
	return Shard(h.Sum32() % Shards)
}

// shardPrefix is "<ns>{<tag>}:", the start of every key of shard sh.
func (s Space) shardPrefix(sh Shard) string { return s.ns + "{" + tags[sh] + "}:" }

// Tag returns shard sh's hash tag, without braces.
func Tag(sh Shard) string { return tags[sh] }

// tags holds each shard's hash tag. Shard i's tag is the first string
// "<i>-<k>" (k = 0, 1, ...) whose cluster slot falls in the middle half of
// the i-th of Shards equal parts of the slot range: the shards' slots are
// spread evenly, whatever masters own them.
var tags = func() [Shards]string {
	var t [Shards]string
	width := SlotCount / Shards
	for i := range t {
		lo, hi := i*width+width/4, (i+1)*width-width/4
		for k := 0; ; k++ {
			cand := strconv.Itoa(i) + "-" + strconv.Itoa(k)
			if slot := Slot(cand); slot >= lo && slot < hi {
				t[i] = cand
				break
			}
		}
	}
	return t
}()

// SlotCount is the number of Redis Cluster hash slots.
const SlotCount = 16384

// Slot returns the Redis Cluster hash slot of a hash tag's content (or of a
// key without a tag): CRC16 (XMODEM) modulo 16384, as Redis computes it.
func Slot(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % SlotCount
}
