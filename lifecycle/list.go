package lifecycle

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// ListQuery selects sessions for List.
type ListQuery struct {
	RefID  string
	Status Status // "" for any
	Limit  int    // 1..100; 0 means 20
	Cursor string // from a previous page's NextCursor
}

// Page is one page of List, newest first.
type Page struct {
	Sessions   []Session `json:"sessions"`
	NextCursor *string   `json:"next_cursor"`
}

// Limits of List.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
)

// indexMember is a session's member in the list indexes. Every member has
// score 0 and sorts by created time then id, so a lexicographic range is a
// stable, newest-first cursor, and the same order across shards.
func indexMember(s *Session) string {
	return fmt.Sprintf("%013d:%s", s.CreatedAt.UnixMilli(), s.ID)
}

// memberID is the session id inside an index member.
func memberID(m string) string {
	_, id, _ := strings.Cut(m, ":")
	return id
}

var memberRE = regexp.MustCompile(`^[0-9]{13}:[0-9a-f-]{36}$`)

// List returns sessions newest first, filtered by ref_id and/or status. The
// cursor is a position in a stable order (created time, then id), so pages
// neither skip nor repeat sessions while new ones are created. Without a
// ref_id the shards' indexes are merged.
func (s *Service) List(ctx context.Context, q ListQuery) (*Page, error) {
	if q.Limit == 0 {
		q.Limit = DefaultListLimit
	}
	if q.Limit < 1 || q.Limit > MaxListLimit {
		return nil, invalid("limit", fmt.Sprintf("must be between 1 and %d", MaxListLimit))
	}
	if q.Status != "" && !q.Status.Valid() {
		return nil, invalid("status", "unknown status")
	}
	if err := checkName("ref_id", q.RefID, false); err != nil {
		return nil, err
	}
	from := "+"
	if q.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || !memberRE.Match(b) {
			return nil, invalid("cursor", "must be a cursor from a previous page")
		}
		from = "(" + string(b)
	}
	var shards []keyspace.Shard
	if q.RefID != "" {
		shards = []keyspace.Shard{ShardOfRef(q.RefID)}
	} else {
		for i := range keyspace.Shards {
			shards = append(shards, keyspace.Shard(i))
		}
	}
	index := func(sh keyspace.Shard) string {
		switch {
		case q.RefID != "":
			return s.keys.IndexRef(sh, q.RefID)
		case q.Status != "":
			return s.keys.IndexStatus(sh, string(q.Status))
		}
		return s.keys.IndexAll(sh)
	}
	now := s.now()
	if q.RefID == "" && (q.Status == StatusExpired || q.Status == StatusAbandoned) {
		// Sessions past their time limit still sit in their pending
		// status's index until something expires them; do it now, so the
		// index holds every session that reads as expired or abandoned.
		if err := s.expireOverdue(ctx, now); err != nil {
			return nil, err
		}
	}
	m := newMerge(shards, index, from, int64(q.Limit+1))
	page := &Page{Sessions: []Session{}}
	for len(page.Sessions) < q.Limit {
		members, err := m.next(ctx, s.rdb, q.Limit-len(page.Sessions))
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		if len(members) == 0 {
			return page, nil
		}
		sessions, err := s.loadMembers(ctx, members, m)
		if err != nil {
			return nil, err
		}
		for _, r := range sessions {
			if overdue(r, now) {
				got, err := s.Get(ctx, r.ID)
				if err != nil {
					continue // deleted meanwhile
				}
				r.Session = *got
			}
			if q.Status != "" && r.Status != q.Status {
				continue
			}
			page.Sessions = append(page.Sessions, r.Session)
		}
	}
	if more, err := m.more(ctx, s.rdb); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	} else if more {
		cur := base64.RawURLEncoding.EncodeToString([]byte(indexMember(&page.Sessions[q.Limit-1])))
		page.NextCursor = &cur
	}
	return page, nil
}

// loadMembers reads the sessions of index members in one round trip,
// leaving out deleted ones and dropping members whose record has expired
// by its TTL before a purge ran.
func (s *Service) loadMembers(ctx context.Context, members []shardMember, m *merge) ([]*record, error) {
	p := s.rdb.Pipeline()
	recs := make([]*redis.StringCmd, len(members))
	piis := make([]*redis.StringCmd, len(members))
	for i, mb := range members {
		id := memberID(mb.member)
		recs[i] = p.Get(ctx, s.keys.Session(mb.shard, id))
		piis[i] = p.Get(ctx, s.keys.Personal(mb.shard, id))
	}
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := make([]*record, 0, len(members))
	for i, mb := range members {
		r, err := s.decode(memberID(mb.member), recs[i].Val(), piis[i], true)
		if errors.Is(err, ErrNotFound) {
			// The record's TTL ran out before a purge ran: drop the
			// member, guarded on the record's absence. Best effort: the
			// next List tries again.
			t := newTx()
			t.expectVersion(s.keys.Session(mb.shard, memberID(mb.member)), 0)
			t.op("ZREM", m.index(mb.shard), mb.member)
			_ = s.repair(ctx, t, "drop list member")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		if r.DeletedAt == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// maxCatchUp bounds the overdue sessions one List expires per shard before
// it reads; past it, the scheduler's sweep is far behind and List shows
// what the indexes hold.
const maxCatchUp = 1000

// expireOverdue expires the sessions whose time limit has passed at now.
func (s *Service) expireOverdue(ctx context.Context, now time.Time) error {
	for sh := range keyspace.Shards {
		ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: s.keys.Due(keyspace.Shard(sh), string(WorkExpire)), Start: "-inf", Stop: now.UnixMilli(),
			ByScore: true, Count: maxCatchUp,
		}).Result()
		if err != nil {
			return fmt.Errorf("list sessions: %w", err)
		}
		for _, id := range ids {
			if _, err := s.ExpireDue(ctx, id); err != nil {
				return fmt.Errorf("list sessions: %w", err)
			}
		}
	}
	return nil
}

// merge walks the members of one index per shard newest first, as one
// list: a k-way merge that reads each shard in batches.
type merge struct {
	index func(keyspace.Shard) string
	batch int64
	heads []*shardHead
}

type shardHead struct {
	shard keyspace.Shard
	from  string   // ZRANGE BYLEX REV start for the next batch
	buf   []string // read, not yet taken
	done  bool     // the index has nothing past buf
}

type shardMember struct {
	shard  keyspace.Shard
	member string
}

func newMerge(shards []keyspace.Shard, index func(keyspace.Shard) string, from string, batch int64) *merge {
	m := &merge{index: index, batch: batch}
	for _, sh := range shards {
		m.heads = append(m.heads, &shardHead{shard: sh, from: from})
	}
	return m
}

// fill reads the next batch of every shard whose buffer is empty, in one
// round trip.
func (m *merge) fill(ctx context.Context, rdb redis.UniversalClient) error {
	var need []*shardHead
	for _, h := range m.heads {
		if len(h.buf) == 0 && !h.done {
			need = append(need, h)
		}
	}
	if len(need) == 0 {
		return nil
	}
	p := rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(need))
	for i, h := range need {
		cmds[i] = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: m.index(h.shard), Start: h.from, Stop: "-", ByLex: true, Rev: true, Count: m.batch})
	}
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		return err
	}
	for i, h := range need {
		h.buf = cmds[i].Val()
		h.done = int64(len(h.buf)) < m.batch
		if len(h.buf) > 0 {
			h.from = "(" + h.buf[len(h.buf)-1]
		}
	}
	return nil
}

// next takes up to n members, newest first across the shards.
func (m *merge) next(ctx context.Context, rdb redis.UniversalClient, n int) ([]shardMember, error) {
	var out []shardMember
	for len(out) < n {
		if err := m.fill(ctx, rdb); err != nil {
			return nil, err
		}
		var best *shardHead
		for _, h := range m.heads {
			if len(h.buf) > 0 && (best == nil || h.buf[0] > best.buf[0]) {
				best = h
			}
		}
		if best == nil {
			break
		}
		out = append(out, shardMember{best.shard, best.buf[0]})
		best.buf = best.buf[1:]
	}
	return out, nil
}

// more reports whether anything is left to take.
func (m *merge) more(ctx context.Context, rdb redis.UniversalClient) (bool, error) {
	if err := m.fill(ctx, rdb); err != nil {
		return false, err
	}
	for _, h := range m.heads {
		if len(h.buf) > 0 {
			return true, nil
		}
	}
	return false, nil
}
