// Package redisconn builds every Redis connection of sessiond from one URL,
// SESSIOND_REDIS_URL, whatever the topology:
//
//	redis://[[user]:password@]host[:port][/db]                          one Redis
//	rediss://…                                                           the same over TLS
//	redis-sentinel://[[user]:password@]h1[:port],h2[:port][/db]?master=NAME  Sentinel
//	redis-cluster://[[user]:password@]h1[:port],h2[:port]               Redis Cluster
//
// (rediss-sentinel:// and rediss-cluster:// use TLS to every node.)
//
// Invariants:
//
//   - A Conn is parsed once; every client is built from it afresh, never by
//     copying another client's options, so credentials, database and TLS
//     reach every pool (Asynq's pub/sub connection included).
//   - Every client honours context deadlines (ContextTimeoutEnabled) and has
//     bounded dial, read, write and pool timeouts, so no caller waits on a
//     dead Redis longer than its context allows.
//   - No error or String output holds a password.
package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Topology is the kind of Redis deployment a URL names.
type Topology string

// The topologies.
const (
	Single   Topology = "single"
	Sentinel Topology = "sentinel"
	Cluster  Topology = "cluster"
)

// Conn is a parsed SESSIOND_REDIS_URL. It is immutable and safe for
// concurrent use.
type Conn struct {
	topology           Topology
	addrs              []string
	username, password string
	db                 int
	master             string // Sentinel's master name
	sentinelPassword   string
	tls                *tls.Config // nil without TLS; cloned for each client
	redacted           string
}

// Options are settings that do not fit in the URL.
type Options struct {
	// CAFile is a PEM file of the CA certificates a TLS Redis is checked
	// against (SESSIOND_REDIS_TLS_CA_FILE); empty means the system's.
	CAFile string
}

// Parse parses a Redis URL. Its errors never quote the URL (it may hold a
// password).
func Parse(raw string, o Options) (*Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("redis url: not a URL such as redis://host:6379/0")
	}
	c := &Conn{}
	useTLS := false
	switch u.Scheme {
	case "redis":
		c.topology = Single
	case "rediss":
		c.topology, useTLS = Single, true
	case "redis-sentinel", "rediss-sentinel":
		c.topology, useTLS = Sentinel, u.Scheme == "rediss-sentinel"
	case "redis-cluster", "rediss-cluster":
		c.topology, useTLS = Cluster, u.Scheme == "rediss-cluster"
	default:
		return nil, fmt.Errorf("redis url: unknown scheme %q: want redis, rediss, redis-sentinel or redis-cluster", u.Scheme)
	}
	if u.User != nil {
		c.username = u.User.Username()
		c.password, _ = u.User.Password()
	}
	if u.Host == "" {
		return nil, errors.New("redis url: no host")
	}
	for h := range strings.SplitSeq(u.Host, ",") {
		if h == "" {
			return nil, errors.New("redis url: an empty host in the host list")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "6379")
		}
		if _, port, err := net.SplitHostPort(h); err != nil || port == "" {
			return nil, fmt.Errorf("redis url: bad host %q", h)
		}
		c.addrs = append(c.addrs, h)
	}
	if c.topology == Single && len(c.addrs) > 1 {
		return nil, errors.New("redis url: one host for redis://; use redis-sentinel:// or redis-cluster:// for several")
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if c.topology == Cluster {
			return nil, errors.New("redis url: Redis Cluster has only database 0")
		}
		if c.db, err = strconv.Atoi(p); err != nil || c.db < 0 {
			return nil, fmt.Errorf("redis url: bad database %q", p)
		}
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "master":
			if c.topology != Sentinel {
				return nil, errors.New("redis url: master= is for redis-sentinel:// only")
			}
		case "sentinel_password":
			if c.topology != Sentinel {
				return nil, errors.New("redis url: sentinel_password= is for redis-sentinel:// only")
			}
		default:
			return nil, fmt.Errorf("redis url: unknown parameter %q", k)
		}
	}
	c.master, c.sentinelPassword = q.Get("master"), q.Get("sentinel_password")
	if c.topology == Sentinel && c.master == "" {
		return nil, errors.New("redis url: redis-sentinel:// needs ?master=NAME")
	}
	if useTLS || o.CAFile != "" {
		if !useTLS {
			return nil, errors.New("SESSIOND_REDIS_TLS_CA_FILE is set but the URL is not rediss://")
		}
		c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.topology == Single {
			c.tls.ServerName, _, _ = net.SplitHostPort(c.addrs[0])
		}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("SESSIOND_REDIS_TLS_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("SESSIOND_REDIS_TLS_CA_FILE: no PEM certificate in the file")
			}
			c.tls.RootCAs = pool
		}
	}
	c.redacted = u.Redacted()
	if q.Has("sentinel_password") {
		c.redacted = strings.Replace(c.redacted, "sentinel_password="+url.QueryEscape(c.sentinelPassword), "sentinel_password=xxxxx", 1)
	}
	return c, nil
}

// Topology is the deployment the URL names.
func (c *Conn) Topology() Topology { return c.topology }

// String is the URL without its passwords.
func (c *Conn) String() string { return c.redacted }

// Pool tunes one client. The zero value is a sensible general pool.
type Pool struct {
	// Name labels the client's connections (CLIENT LIST), e.g. "sessiond-store".
	Name string
	// Size is the number of connections per node; 0 is go-redis's default
	// (10 per CPU).
	Size int
	// ReadTimeout bounds one reply; default 3s. Blocking commands get their
	// block time on top.
	ReadTimeout time.Duration
	// NoRetries turns go-redis's retries of failed commands off (scrapes,
	// health checks: fail fast).
	NoRetries bool
}

// Timeouts every client shares.
const (
	dialTimeout        = 2 * time.Second
	defaultReadTimeout = 3 * time.Second
)

// Client returns a new client for the Conn's deployment: a *redis.Client
// for one Redis or Sentinel (which follows failovers), a
// *redis.ClusterClient for a cluster. The caller closes it.
func (c *Conn) Client(p Pool) redis.UniversalClient {
	read := p.ReadTimeout
	if read <= 0 {
		read = defaultReadTimeout
	}
	retries := 2
	if p.NoRetries {
		retries = -1
	}
	maint := func() *maintnotifications.Config {
		// A Redis Enterprise feature; off, so no client logs about it.
		return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
	var tlsConfig *tls.Config
	if c.tls != nil {
		tlsConfig = c.tls.Clone()
	}
	switch c.topology {
	case Sentinel:
		// go-redis turns maintenance notifications off for Sentinel itself.
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            c.master,
			SentinelAddrs:         append([]string(nil), c.addrs...),
			SentinelPassword:      c.sentinelPassword,
			Username:              c.username,
			Password:              c.password,
			DB:                    c.db,
			ClientName:            p.Name,
			TLSConfig:             tlsConfig,
			PoolSize:              p.Size,
			DialTimeout:           dialTimeout,
			ReadTimeout:           read,
			WriteTimeout:          read,
			PoolTimeout:           read + time.Second,
			MaxRetries:            retries,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
		})
	case Cluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                    append([]string(nil), c.addrs...),
			Username:                 c.username,
			Password:                 c.password,
			ClientName:               p.Name,
			TLSConfig:                tlsConfig,
			PoolSize:                 p.Size,
			DialTimeout:              dialTimeout,
			ReadTimeout:              read,
			WriteTimeout:             read,
			PoolTimeout:              read + time.Second,
			MaxRetries:               retries,
			ContextTimeoutEnabled:    true,
			DisableIdentity:          true,
			MaintNotificationsConfig: maint(),
		})
	}
	return redis.NewClient(&redis.Options{
		Addr:                     c.addrs[0],
		Username:                 c.username,
		Password:                 c.password,
		DB:                       c.db,
		ClientName:               p.Name,
		TLSConfig:                tlsConfig,
		PoolSize:                 p.Size,
		DialTimeout:              dialTimeout,
		ReadTimeout:              read,
		WriteTimeout:             read,
		PoolTimeout:              read + time.Second,
		MaxRetries:               retries,
		ContextTimeoutEnabled:    true,
		DisableIdentity:          true,
		MaintNotificationsConfig: maint(),
	})
}

// Asynq is an asynq.RedisConnOpt whose every MakeRedisClient is a new
// client of the Conn (asynqmon makes its own).
func (c *Conn) Asynq(p Pool) asynq.RedisConnOpt { return asynqOpt{c: c, p: p} }

type asynqOpt struct {
	c *Conn
	p Pool
}

// MakeRedisClient implements asynq.RedisConnOpt.
func (a asynqOpt) MakeRedisClient() any { return a.c.Client(a.p) }
