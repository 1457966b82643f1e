package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
	"github.com/sessiond/sessiond/signing"
)

// Endpoints come from two places: the configuration (Config.Endpoints,
// fixed for the process's life) and the admin API, which keeps them in
// Redis (keyspace: ep:api, with a version counter ep:ver). Every replica
// holds the merged set in a registry it swaps whole; it polls the version
// every endpointPoll and reloads on a change, so a change made through
// any replica reaches every other within a second. The replica that made
// the change reloads at once.
//
// Reloads are serialised (Dispatcher.reloadMu): each reads Redis after the one
// before it stored its registry, so the stored registry never goes back
// to an older ep:ver, and only the build that is stored touches the
// endpoints it shares with the registry it replaces (their 410 marks).

// Endpoint sources, as the admin API shows them.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
)

// Limits of the endpoints managed through the API.
const (
	maxAPIEndpoints    = 100 // bounds the metrics' endpoint labels too
	maxURLLen          = 2048
	maxDescriptionLen  = 1024
	maxHeaders         = 20
	maxHeaderNameLen   = 64
	maxHeaderValueLen  = 1024
	defaultOverlap     = 24 * time.Hour
	maxOverlap         = 720 * time.Hour
	maxPrevious        = 2 // previous secrets kept signing after a rotation
	endpointPoll       = 500 * time.Millisecond
	endpointIDPrefix   = "ep_"
	endpointIDRandomHi = 8 // random bytes of an API endpoint's id
)

var (
	// ErrEndpointNotFound is an unknown endpoint id.
	ErrEndpointNotFound = errors.New("endpoint not found")
	// ErrEndpointFromConfig is a change to an endpoint of the
	// configuration, which only the configuration can change.
	ErrEndpointFromConfig = errors.New("endpoint comes from the configuration: change it there")
	// ErrEndpointDisabled is a recovery or test of a disabled endpoint.
	ErrEndpointDisabled = errors.New("endpoint is disabled: enable it first")
	// ErrTooManyEndpoints refuses a create past maxAPIEndpoints.
	ErrTooManyEndpoints = fmt.Errorf("at most %d endpoints can be managed through the API", maxAPIEndpoints)
	// ErrEndpointsBusy is a change that lost its optimistic transaction
	// to other changes maxChangeAttempts times in a row: retry it.
	ErrEndpointsBusy = errors.New("endpoints are busy: retry")
)

// InvalidEndpointError is a create or change the contract refuses (400).
// Its message never quotes a URL or a header value.
type InvalidEndpointError struct{ msg string }

func (e *InvalidEndpointError) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &InvalidEndpointError{fmt.Sprintf(format, args...)}
}

// EndpointInfo is an endpoint as the admin API shows it.
type EndpointInfo struct {
	ID          string            `json:"id"`
	URL         string            `json:"url"` // without its password
	Events      []string          `json:"events,omitempty"`
	Description string            `json:"description,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	// Disabled is set by a change, or by the endpoint's 410 answer
	// (DisabledReason says which).
	Disabled       bool            `json:"disabled"`
	DisabledReason string          `json:"disabled_reason,omitempty"`
	Source         string          `json:"source"`
	CreatedAt      *lifecycle.Time `json:"created_at,omitempty"`
	UpdatedAt      *lifecycle.Time `json:"updated_at,omitempty"`
	// Secret is in the answers of a create and a rotation only.
	Secret string `json:"secret,omitempty"`
}

// EndpointSpec is a new endpoint (POST /v1/endpoints).
type EndpointSpec struct {
	URL         string            `json:"url"`
	Events      []string          `json:"events,omitempty"`
	Description string            `json:"description,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

// EndpointPatch changes an endpoint (PATCH /v1/endpoints/{id}); nil fields
// are left as they are.
type EndpointPatch struct {
	URL         *string            `json:"url,omitempty"`
	Events      *[]string          `json:"events,omitempty"`
	Description *string            `json:"description,omitempty"`
	Headers     *map[string]string `json:"headers,omitempty"`
	Disabled    *bool              `json:"disabled,omitempty"`
}

// storedEndpoint is an endpoint of the API as ep:api keeps it.
type storedEndpoint struct {
	ID          string            `json:"id"`
	URL         string            `json:"url"`
	Events      []string          `json:"events,omitempty"`
	Description string            `json:"description,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Disabled    bool              `json:"disabled,omitempty"`
	Secrets     []storedSecret    `json:"secrets"`
	CreatedAt   int64             `json:"created_at"` // unix ms
	UpdatedAt   int64             `json:"updated_at"`
}

// storedSecret is one signing secret; Until (unix ms) ends a previous
// secret's overlap after a rotation, 0 for the current one. An endpoint's
// secrets are stored current first, then the previous ones newest first.
type storedSecret struct {
	Secret string `json:"s"`
	Until  int64  `json:"u,omitempty"`
}

// activeSecrets are the secrets that sign at now, the current first.
func (s *storedEndpoint) activeSecrets(now time.Time) []string {
	var out []string
	for _, sec := range s.Secrets {
		if sec.Until == 0 || now.UnixMilli() < sec.Until {
			out = append(out, sec.Secret)
		}
	}
	return out
}

// registry is the endpoints a replica delivers to, swapped whole.
type registry struct {
	byID    map[string]*endpoint
	order   []*endpoint      // configuration first, then the API's by creation
	gone    map[string]bool  // deleted through the API: their deliveries are dropped
	version string           // ep:ver when loaded
	expires time.Time        // the next end of a secret's overlap (zero: none)
	stored  map[string]int64 // API endpoints' updated_at, to keep unchanged ones
	marked  map[string]bool  // endpoints a 410 disabled, set on them by the swap
}

// endpoint returns the endpoint with id, nil if there is none.
func (r *registry) endpoint(id string) *endpoint { return r.byID[id] }

// endpoints returns the current registry.
func (d *Dispatcher) endpoints() *registry { return d.reg.Load() }

// reloadEndpoints reads the version counter and, when it moved or a
// secret's overlap ended, the endpoints and their marks, and swaps the
// registry. force reloads whatever the version. Reloads run one at a
// time: a registry read from Redis is never replaced by one read before.
func (d *Dispatcher) reloadEndpoints(ctx context.Context, force bool) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cur := d.reg.Load()
	k := d.keys
	if !force {
		ver, err := d.rdb.Get(ctx, k.EndpointsVersion()).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read endpoints version: %w", err)
		}
		if ver == cur.version && (cur.expires.IsZero() || d.now().Before(cur.expires)) {
			return nil
		}
	}
	p := d.rdb.TxPipeline() // one slot: the endpoints' keys share a tag
	ver := p.Get(ctx, k.EndpointsVersion())
	api := p.HGetAll(ctx, k.EndpointsAPI())
	marks := p.HGetAll(ctx, k.EndpointsDisabled())
	gone := p.HKeys(ctx, k.EndpointsGone())
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read endpoints: %w", err)
	}
	next, err := d.buildRegistry(cur, ver.Val(), api.Val(), marks.Val(), gone.Val())
	if err != nil {
		return err
	}
	d.swap(cur, next)
	d.endpointsLoaded()
	return nil
}

// swap stores next in place of cur; the reload lock is held. It sets the
// 410 marks next read on its endpoints first (fresh ones are not visible
// yet; shared ones are the same endpoints either way), then tells the
// metrics of the endpoints that went and of the breakers that were
// replaced while open, on every replica alike.
func (d *Dispatcher) swap(cur, next *registry) {
	for _, ep := range next.order {
		ep.marked.Store(next.marked[ep.id])
	}
	d.reg.Store(next)
	for id, old := range cur.byID {
		ep := next.byID[id]
		switch {
		case ep == nil:
			d.cfg.Metrics.ForgetEndpoint(id)
		case ep.breaker != old.breaker && old.breaker.isOpen():
			d.cfg.Metrics.SetCircuit(id, false)
		}
	}
}

// buildRegistry makes the registry from what Redis holds, keeping the
// endpoint objects (their breaker and concurrency state) of cur for the
// endpoints that did not change. It changes nothing that cur's endpoints
// hold: the 410 marks it read are set by swap.
func (d *Dispatcher) buildRegistry(cur *registry, version string, api, marks map[string]string, gone []string) (*registry, error) {
	now := d.now()
	next := &registry{
		byID:    make(map[string]*endpoint, len(d.configured)+len(api)),
		gone:    make(map[string]bool, len(gone)),
		version: version,
		stored:  make(map[string]int64, len(api)),
		marked:  make(map[string]bool, len(marks)),
	}
	for _, id := range gone {
		next.gone[id] = true
	}
	for _, ep := range d.configured {
		next.byID[ep.id] = ep
		next.order = append(next.order, ep)
	}
	var stored []*storedEndpoint
	for id, js := range api {
		var s storedEndpoint
		if err := json.Unmarshal([]byte(js), &s); err != nil || s.ID != id {
			d.log.Error("skipping unreadable endpoint", "endpoint_id", id)
			continue
		}
		if next.byID[id] != nil {
			d.log.Error("skipping endpoint: its id is the configuration's", "endpoint_id", id)
			continue
		}
		stored = append(stored, &s)
	}
	slices.SortFunc(stored, func(a, b *storedEndpoint) int {
		if c := a.CreatedAt - b.CreatedAt; c != 0 {
			return int(min(max(c, -1), 1))
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, s := range stored {
		for _, sec := range s.Secrets {
			if sec.Until != 0 && now.UnixMilli() < sec.Until {
				if at := time.UnixMilli(sec.Until); next.expires.IsZero() || at.Before(next.expires) {
					next.expires = at
				}
			}
		}
		next.stored[s.ID] = s.UpdatedAt
		var old *endpoint
		if cur != nil {
			old = cur.byID[s.ID]
		}
		ep := old
		if old == nil || cur.stored[s.ID] != s.UpdatedAt || (!cur.expires.IsZero() && !now.Before(cur.expires)) {
			built, err := d.apiEndpoint(s, now)
			if err != nil {
				d.log.Error("skipping endpoint", "endpoint_id", s.ID, "err", err.Error())
				continue
			}
			if old != nil {
				// Keep its concurrency state, and its health while it
				// still names the same URL: a new URL starts closed.
				built.limit = old.limit
				if old.urlHash == built.urlHash {
					built.breaker = old.breaker
				}
			}
			ep = built
		}
		next.byID[s.ID] = ep
		next.order = append(next.order, ep)
	}
	for _, ep := range next.order {
		var m disabledMark
		if js, ok := marks[ep.id]; ok && json.Unmarshal([]byte(js), &m) == nil && m.URLHash == ep.urlHash {
			next.marked[ep.id] = true
		}
	}
	return next, nil
}

// apiEndpoint builds the delivery state of an endpoint of the API.
func (d *Dispatcher) apiEndpoint(s *storedEndpoint, now time.Time) (*endpoint, error) {
	secrets := s.activeSecrets(now)
	if len(secrets) == 0 { // cannot happen: the current secret has no end
		return nil, errors.New("no active secret")
	}
	ep, err := newEndpoint(Endpoint{ID: s.ID, URL: s.URL, Secrets: secrets, Events: s.Events, Disabled: s.Disabled}, &d.cfg)
	if err != nil {
		return nil, err
	}
	ep.source = SourceAPI
	ep.description = s.Description
	ep.createdAt, ep.updatedAt = s.CreatedAt, s.UpdatedAt
	if len(s.Headers) > 0 {
		ep.headers = make(http.Header, len(s.Headers))
		for name, v := range s.Headers {
			ep.headers.Set(name, v)
		}
		ep.headerMap = s.Headers
	}
	return ep, nil
}

// watchEndpoints reloads the registry every endpointPoll until ctx is done.
func (d *Dispatcher) watchEndpoints(ctx context.Context) {
	t := time.NewTicker(endpointPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch err := d.reloadEndpoints(ctx, false); {
		case err == nil:
			d.endpointsLoaded()
		case ctx.Err() == nil:
			d.log.Debug("reload endpoints", "err", err.Error())
		}
	}
}

// info is how the admin API shows ep.
func (ep *endpoint) info(reason string) EndpointInfo {
	in := EndpointInfo{
		ID:          ep.id,
		URL:         ep.shownURL,
		Description: ep.description,
		Headers:     ep.headerMap,
		Disabled:    ep.disabled || reason != "",
		Source:      ep.source,
	}
	if ep.disabled {
		reason = ""
	}
	in.DisabledReason = reason
	for typ := range ep.events {
		in.Events = append(in.Events, typ)
	}
	slices.Sort(in.Events)
	if ep.createdAt != 0 {
		c, u := lifecycle.At(time.UnixMilli(ep.createdAt)), lifecycle.At(time.UnixMilli(ep.updatedAt))
		in.CreatedAt, in.UpdatedAt = &c, &u
	}
	return in
}

// Endpoints lists every endpoint, the configuration's first. It reads
// Redis, so it shows a change made through another replica at once.
func (d *Dispatcher) Endpoints(ctx context.Context) ([]EndpointInfo, error) {
	if err := d.reloadEndpoints(ctx, false); err != nil {
		return nil, err
	}
	reg := d.endpoints()
	marks, err := d.store.marks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]EndpointInfo, 0, len(reg.order))
	for _, ep := range reg.order {
		out = append(out, ep.info(markReason(marks, ep)))
	}
	return out, nil
}

// Endpoint returns one endpoint.
func (d *Dispatcher) Endpoint(ctx context.Context, id string) (*EndpointInfo, error) {
	if err := d.reloadEndpoints(ctx, false); err != nil {
		return nil, err
	}
	ep := d.endpoints().endpoint(id)
	if ep == nil {
		return nil, ErrEndpointNotFound
	}
	marks, err := d.store.marks(ctx)
	if err != nil {
		return nil, err
	}
	in := ep.info(markReason(marks, ep))
	return &in, nil
}

// markReason is why a 410 disabled ep, "" when it did not.
func markReason(marks map[string]disabledMark, ep *endpoint) string {
	m, ok := marks[ep.id]
	if !ok || m.URLHash != ep.urlHash {
		return ""
	}
	return m.Reason + " at " + m.At.Format(lifecycle.TimeLayout)
}

// CreateEndpoint adds an endpoint with a fresh secret, which the answer
// holds (and nothing else ever shows again).
func (d *Dispatcher) CreateEndpoint(ctx context.Context, spec EndpointSpec) (*EndpointInfo, error) {
	s := &storedEndpoint{URL: spec.URL, Events: spec.Events, Description: spec.Description, Headers: spec.Headers}
	if err := validateEndpoint(s); err != nil {
		return nil, err
	}
	now := d.now().UnixMilli()
	s.CreatedAt, s.UpdatedAt = now, now
	s.Secrets = []storedSecret{{Secret: signing.GenerateSecret()}}
	for {
		s.ID = newEndpointID()
		if d.endpoints().endpoint(s.ID) == nil {
			break
		}
	}
	err := d.changeEndpoints(ctx, func(api map[string]string) (map[string]*storedEndpoint, error) {
		if len(api) >= maxAPIEndpoints {
			return nil, ErrTooManyEndpoints
		}
		return map[string]*storedEndpoint{s.ID: s}, nil
	})
	if err != nil {
		return nil, err
	}
	d.log.Info("webhook endpoint created", "endpoint_id", s.ID)
	return d.shownAfterChange(ctx, s.ID, s.Secrets[0].Secret)
}

// UpdateEndpoint changes an endpoint of the API. Enabling it also lifts
// the mark a 410 answer left.
func (d *Dispatcher) UpdateEndpoint(ctx context.Context, id string, patch EndpointPatch) (*EndpointInfo, error) {
	if err := d.refuseConfig(ctx, id); err != nil {
		return nil, err
	}
	enable := patch.Disabled != nil && !*patch.Disabled
	err := d.changeEndpoints(ctx, func(api map[string]string) (map[string]*storedEndpoint, error) {
		s, err := storedOf(api, id)
		if err != nil {
			return nil, err
		}
		if patch.URL != nil {
			s.URL = *patch.URL
		}
		if patch.Events != nil {
			s.Events = *patch.Events
		}
		if patch.Description != nil {
			s.Description = *patch.Description
		}
		if patch.Headers != nil {
			s.Headers = *patch.Headers
		}
		if patch.Disabled != nil {
			s.Disabled = *patch.Disabled
		}
		if err := validateEndpoint(s); err != nil {
			return nil, err
		}
		s.UpdatedAt = max(d.now().UnixMilli(), s.UpdatedAt+1)
		return map[string]*storedEndpoint{id: s}, nil
	}, enableIf(enable, id)...)
	if err != nil {
		return nil, err
	}
	d.log.Info("webhook endpoint changed", "endpoint_id", id)
	return d.shownAfterChange(ctx, id, "")
}

// enableIf lists the extra writes of a change that enables endpoint id.
func enableIf(enable bool, id string) []string {
	if enable {
		return []string{id}
	}
	return nil
}

// DeleteEndpoint removes an endpoint of the API. Its deliveries still
// pending are dropped when they come up, and their Asynq tasks are
// removed in the background.
func (d *Dispatcher) DeleteEndpoint(ctx context.Context, id string) error {
	if err := d.refuseConfig(ctx, id); err != nil {
		return err
	}
	err := d.changeEndpoints(ctx, func(api map[string]string) (map[string]*storedEndpoint, error) {
		if _, err := storedOf(api, id); err != nil {
			return nil, err
		}
		return map[string]*storedEndpoint{id: nil}, nil
	})
	if err != nil {
		return err
	}
	d.log.Info("webhook endpoint deleted", "endpoint_id", id)
	// The swap forgets its metrics, here now and on the other replicas
	// at their next reload.
	if err := d.reloadEndpoints(ctx, true); err != nil {
		d.log.Warn("reload endpoints after a delete; the next poll does", "endpoint_id", id, "err", err.Error())
	}
	go d.dropEndpointTasks(context.WithoutCancel(ctx), id)
	return nil
}

// errOverlap refuses a rotation's overlap; ParseOverlap and
// RotateEndpointSecret say the same.
var errOverlap = &InvalidEndpointError{`overlap: want a positive duration of at most 720h, such as "24h" (leave it out for the default, 24h)`}

// ParseOverlap parses a rotation's overlap as the admin API takes it: ""
// is 0, the default; otherwise a Go duration above 0 and at most 720h
// (an *InvalidEndpointError if not: "0s" too).
func ParseOverlap(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxOverlap {
		return 0, errOverlap
	}
	return d, nil
}

// RotateEndpointSecret gives an endpoint of the API a new secret, shown in
// the answer. The previous ones keep signing beside it (a second v1 entry)
// until overlap has passed: at most 720h; 0 means the default, 24h. The
// maxPrevious newest previous secrets still in their overlap are kept
// (at most three v1 entries); older ones stop signing at once.
func (d *Dispatcher) RotateEndpointSecret(ctx context.Context, id string, overlap time.Duration) (*EndpointInfo, error) {
	switch {
	case overlap < 0 || overlap > maxOverlap:
		return nil, errOverlap
	case overlap == 0:
		overlap = defaultOverlap
	}
	if err := d.refuseConfig(ctx, id); err != nil {
		return nil, err
	}
	secret := signing.GenerateSecret()
	err := d.changeEndpoints(ctx, func(api map[string]string) (map[string]*storedEndpoint, error) {
		s, err := storedOf(api, id)
		if err != nil {
			return nil, err
		}
		now := d.now()
		until := now.Add(overlap).UnixMilli()
		kept := []storedSecret{{Secret: secret}}
		for _, sec := range s.Secrets { // current first, then newest first
			switch {
			case len(kept) > maxPrevious:
			case sec.Until == 0:
				kept = append(kept, storedSecret{Secret: sec.Secret, Until: until})
			case now.UnixMilli() < sec.Until:
				kept = append(kept, sec)
			}
		}
		s.Secrets = kept
		s.UpdatedAt = max(now.UnixMilli(), s.UpdatedAt+1)
		return map[string]*storedEndpoint{id: s}, nil
	})
	if err != nil {
		return nil, err
	}
	d.log.Info("webhook endpoint secret rotated", "endpoint_id", id, "overlap", overlap.String())
	return d.shownAfterChange(ctx, id, secret)
}

// refuseConfig returns ErrEndpointFromConfig for an endpoint of the
// configuration.
func (d *Dispatcher) refuseConfig(ctx context.Context, id string) error {
	if err := d.reloadEndpoints(ctx, false); err != nil {
		return err
	}
	if ep := d.endpoints().endpoint(id); ep != nil && ep.source == SourceConfig {
		return ErrEndpointFromConfig
	}
	return nil
}

// storedOf decodes endpoint id of ep:api.
func storedOf(api map[string]string, id string) (*storedEndpoint, error) {
	js, ok := api[id]
	if !ok {
		return nil, ErrEndpointNotFound
	}
	var s storedEndpoint
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return nil, fmt.Errorf("decode endpoint %s: %w", id, err)
	}
	return &s, nil
}

// shownAfterChange reloads the registry (this replica sees its own change
// at once) and returns the endpoint, with secret when it is new.
func (d *Dispatcher) shownAfterChange(ctx context.Context, id, secret string) (*EndpointInfo, error) {
	if err := d.reloadEndpoints(ctx, true); err != nil {
		return nil, err
	}
	in, err := d.Endpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	in.Secret = secret
	return in, nil
}

// maxChangeAttempts bounds the optimistic retries of an endpoint change.
const maxChangeAttempts = 10

// changeEndpoints applies change to ep:api in one transaction, watched on
// the version counter, and bumps the version. change gets the endpoints as
// stored and returns the ones to write (nil deletes). enable lifts the 410
// marks of those ids in the same transaction.
func (d *Dispatcher) changeEndpoints(ctx context.Context, change func(api map[string]string) (map[string]*storedEndpoint, error), enable ...string) error {
	k := d.keys
	for range maxChangeAttempts {
		err := d.rdb.Watch(ctx, func(tx *redis.Tx) error {
			api, err := tx.HGetAll(ctx, k.EndpointsAPI()).Result()
			if err != nil {
				return err
			}
			writes, err := change(api)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for id, s := range writes {
					if s == nil {
						p.HDel(ctx, k.EndpointsAPI(), id)
						p.HDel(ctx, k.EndpointsDisabled(), id)
						p.HSet(ctx, k.EndpointsGone(), id, d.now().UnixMilli())
						p.Expire(ctx, k.EndpointsGone(), d.cfg.Retention)
						continue
					}
					js, err := json.Marshal(s)
					if err != nil {
						return err
					}
					p.HSet(ctx, k.EndpointsAPI(), id, js)
				}
				for _, id := range enable {
					p.HDel(ctx, k.EndpointsDisabled(), id)
				}
				p.Incr(ctx, k.EndpointsVersion())
				return nil
			})
			return err
		}, k.EndpointsVersion(), k.EndpointsAPI())
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return ErrEndpointsBusy
}

// newEndpointID is ep_ and 16 random hex digits.
func newEndpointID() string {
	b := make([]byte, endpointIDRandomHi)
	rand.Read(b) // never fails since Go 1.24
	return endpointIDPrefix + hex.EncodeToString(b)
}

// validateEndpoint checks an endpoint of the API against the contract.
func validateEndpoint(s *storedEndpoint) error {
	if len(s.URL) > maxURLLen {
		return invalidf("url: at most %d characters", maxURLLen)
	}
	if u, ok := parseEndpointURL(s.URL); !ok || u.Fragment != "" {
		return invalidf("url: want an absolute http or https URL with a host name, a port from 1 to 65535 if any, and no fragment")
	}
	if len(s.Description) > maxDescriptionLen || !printable(s.Description, true) {
		return invalidf("description: at most %d printable characters", maxDescriptionLen)
	}
	seen := make(map[string]bool, len(s.Events))
	for _, typ := range s.Events {
		if !slices.Contains(lifecycle.EventTypes, typ) {
			return invalidf("events: unknown event type %q", typ)
		}
		if seen[typ] {
			return invalidf("events: %q is listed twice", typ)
		}
		seen[typ] = true
	}
	slices.Sort(s.Events)
	if len(s.Headers) > maxHeaders {
		return invalidf("headers: at most %d", maxHeaders)
	}
	canon := make(map[string]bool, len(s.Headers))
	for name, v := range s.Headers {
		if err := checkHeader(name, v); err != nil {
			return err
		}
		c := http.CanonicalHeaderKey(name)
		if canon[c] {
			return invalidf("headers: %q is listed twice", name)
		}
		canon[c] = true
	}
	if len(s.Headers) == 0 {
		s.Headers = nil
	}
	return nil
}

// reservedHeaders are the headers a custom header may not set: the
// signature's, the transport's and the hop-by-hop ones. webhook-* and
// content-* are refused by prefix.
var reservedHeaders = map[string]bool{
	"host": true, "x-hmac-signature": true, "x-auth-client": true, "user-agent": true,
	"connection": true, "keep-alive": true, "proxy-connection": true, "proxy-authenticate": true,
	"proxy-authorization": true, "te": true, "trailer": true, "trailers": true,
	"transfer-encoding": true, "upgrade": true,
}

// checkHeader checks one custom header. Its value is never quoted: it may
// be a credential.
func checkHeader(name, value string) error {
	if name == "" || len(name) > maxHeaderNameLen || !tokenName(name) {
		return invalidf("headers: %.64q is not a header name (1 to %d of RFC 9110's token characters)", name, maxHeaderNameLen)
	}
	lower := strings.ToLower(name)
	if reservedHeaders[lower] || strings.HasPrefix(lower, "webhook-") || strings.HasPrefix(lower, "content-") {
		return invalidf("headers: %s is set by sessiond and cannot be overridden", name)
	}
	if len(value) > maxHeaderValueLen || !printable(value, false) || strings.TrimSpace(value) != value || value == "" {
		return invalidf("headers: the value of %s must be 1 to %d visible characters, without leading or trailing space", name, maxHeaderValueLen)
	}
	return nil
}

// tokenName reports whether s holds only RFC 9110 token characters.
func tokenName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// printable reports whether s is valid UTF-8 without control characters
// (a description may hold newlines when multiline is set).
func printable(s string, multiline bool) bool {
	for _, r := range s {
		switch {
		case r == 0xFFFD:
			return false
		case r == '\n' && multiline, r == '\t':
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			return false
		}
	}
	return true
}

// dropEndpointTasks removes the Asynq tasks of a deleted endpoint's
// deliveries (those that come up before it finishes are dropped anyway).
func (d *Dispatcher) dropEndpointTasks(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n := 0
	for _, q := range d.queues {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			d.inspector.ListPendingTasks, d.inspector.ListScheduledTasks, d.inspector.ListRetryTasks, d.inspector.ListArchivedTasks,
		} {
			n += d.dropTasksOf(ctx, q, list, id)
		}
	}
	if n > 0 {
		d.log.Info("dropped the deliveries of a deleted endpoint", "endpoint_id", id, "deliveries", n)
	}
}

// dropTasksOf deletes, page by page, the tasks of list in queue q whose
// delivery is to endpoint id, and returns how many.
func (d *Dispatcher) dropTasksOf(ctx context.Context, q string, list func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error), id string) int {
	n := 0
	for page := 1; ctx.Err() == nil; page++ {
		tasks, err := list(q, asynq.Page(page), asynq.PageSize(500))
		if err != nil || len(tasks) == 0 {
			return n
		}
		deleted := 0
		for _, t := range tasks {
			if t.Type != taskType {
				continue
			}
			p, err := decodePayload(t.Payload)
			if err != nil {
				continue
			}
			if _, _, ep, _ := parseDeliveryID(p.Delivery); ep == id {
				if d.inspector.DeleteTask(q, t.ID) == nil {
					deleted++
				}
			}
		}
		n += deleted
		if deleted > 0 {
			page-- // the next page moved up
		}
	}
	return n
}

// endpointOptions is what an endpoint of the API has beyond its delivery
// state: where it comes from, its description, custom headers and times.
type endpointOptions struct {
	source      string
	description string
	headers     http.Header       // canonical, for the requests
	headerMap   map[string]string // as given, for the API
	createdAt   int64
	updatedAt   int64
}
