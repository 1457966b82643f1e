package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// maxResponseBytes caps the answer the client reads; a longer one is an
// error (no route of the contract answers anywhere near it).
const maxResponseBytes = 32 << 20

// DefaultTimeout bounds each attempt of the default http.Client.
const DefaultTimeout = 30 * time.Second

// Client calls the admin API of one sessiond. Create it with New.
type Client struct {
	base   string // scheme://host[:port][/prefix], without a trailing slash
	key    string
	secret []byte
	hc     *http.Client
	retry  RetryPolicy
	now    func() time.Time
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send through hc. The default is an
// http.Client with DefaultTimeout that does not follow redirects (a
// redirected request would carry its signature to another target); hc is
// used as given.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithRetry sets the retry policy; zero fields keep their defaults.
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) { c.retry = p }
}

// WithClock makes the client read the time from now: the X-TIMESTAMP of
// every signature and the base of a Retry-After given as a date.
func WithClock(now func() time.Time) Option {
	return func(c *Client) { c.now = now }
}

// New returns a client of the admin API at baseURL (e.g.
// "http://127.0.0.1:8080"; a path prefix is kept) that signs with apiKey
// and apiSecret.
func New(baseURL, apiKey, apiSecret string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		return nil, errors.New("client: base URL does not parse")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("client: base URL must be http:// or https://")
	case u.Host == "":
		return nil, errors.New("client: base URL has no host")
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, errors.New("client: base URL must not have a query, fragment or user")
	case apiKey == "":
		return nil, errors.New("client: API key is empty")
	case apiSecret == "":
		return nil, errors.New("client: API secret is empty")
	}
	c := &Client{
		base:   strings.TrimSuffix(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"),
		key:    apiKey,
		secret: []byte(apiSecret),
		now:    time.Now,
		sleep:  sleepContext,
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{
			Timeout: DefaultTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.retry = c.retry.withDefaults()
	return c, nil
}

// String describes the client without its secret.
func (c *Client) String() string { return "client.Client{" + c.base + ", key " + c.key + "}" }

// GoString is String, so %#v does not print the secret either.
func (c *Client) GoString() string { return c.String() }

// Response is an HTTP answer of the admin API, read whole.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// CallOption adjusts one call.
type CallOption func(*call)

type call struct {
	header  http.Header
	capture *Response
}

// WithIdempotencyKey sends an Idempotency-Key header: the daemon answers an
// exact repeat with the first response, so the call is also retried like a
// GET.
func WithIdempotencyKey(key string) CallOption {
	return WithHeader("Idempotency-Key", key)
}

// WithHeader sets a request header. The signature headers cannot be set:
// the client sets them last.
func WithHeader(name, value string) CallOption {
	return func(c *call) {
		if c.header == nil {
			c.header = make(http.Header)
		}
		c.header.Set(name, value)
	}
}

// CaptureResponse stores the call's last HTTP answer in dst, an error
// answer included (sessionctl prints it as received). dst is left alone
// when no answer came.
func CaptureResponse(dst *Response) CallOption {
	return func(c *call) { c.capture = dst }
}

// Do signs and sends any request to path (starting with "/", with an
// already escaped query if any) and returns the answer. A non-2xx answer
// comes back as the Response together with an *Error. It retries like the
// typed methods.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, opts ...CallOption) (*Response, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, errors.New("client: path must start with /")
	}
	return c.send(ctx, strings.ToUpper(method), path, body, opts)
}

// call sends a request with in (when not nil) as its JSON body, and decodes
// a 2xx answer into out (when not nil). op names the operation in errors.
func (c *Client) call(ctx context.Context, op, method, path string, query url.Values, in, out any, opts []CallOption) (*Response, error) {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = b
	}
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	resp, err := c.send(ctx, method, path, body, opts)
	if err != nil {
		return resp, fmt.Errorf("%s: %w", op, err)
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return resp, fmt.Errorf("%s: decode answer: %w", op, err)
		}
	}
	return resp, nil
}

// send makes up to RetryPolicy.MaxAttempts attempts of one request and
// returns the last answer; a non-2xx one also as an *Error.
func (c *Client) send(ctx context.Context, method, target string, body []byte, opts []CallOption) (*Response, error) {
	var cl call
	for _, o := range opts {
		o(&cl)
	}
	rawURL := c.base + target
	if _, err := http.NewRequest(method, rawURL, nil); err != nil {
		return nil, fmt.Errorf("%s %s: invalid method or request target", method, pathOf(target))
	}
	// Safe to resend whatever happened to the previous attempt.
	safe := method == http.MethodGet || method == http.MethodHead || cl.header.Get("Idempotency-Key") != ""
	for attempt := 1; ; attempt++ {
		resp, err := c.attempt(ctx, method, rawURL, body, cl.header)
		if resp != nil && cl.capture != nil {
			*cl.capture = *resp
		}
		if err == nil && (resp.StatusCode < 200 || resp.StatusCode > 299) {
			err = newError(resp, c.now())
		}
		if err == nil {
			return resp, nil
		}
		cause := err
		if resp == nil {
			err = fmt.Errorf("%s %s: %w", method, pathOf(target), err)
		}
		wait, again := c.retry.next(attempt, safe, resp, err)
		if !again {
			return resp, err
		}
		serr := ctx.Err()
		if serr == nil {
			if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
				return resp, err // the context would end before the next attempt
			}
			serr = c.sleep(ctx, wait)
		}
		switch {
		case serr == nil:
		case errors.Is(err, serr):
			return resp, err // the attempt itself was cut off by the context
		default:
			return resp, fmt.Errorf("%s %s: %w while waiting to retry after: %w", method, pathOf(target), serr, cause)
		}
	}
}

// attempt sends the request once. Its error is from the transport; an
// answer, whatever its status, is a Response.
func (c *Client) attempt(ctx context.Context, method, rawURL string, body []byte, header http.Header) (*Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return nil, err // not reached: send built the same request
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sessiond-client")
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	signing.SetRequestHeaders(req.Header, c.key, c.secret, method, req.URL.RequestURI(), body, c.now())
	hr, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error // its text repeats the URL; the caller names the route
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	defer hr.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hr.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", errAnswerLost{err})
	}
	if len(b) > maxResponseBytes {
		return nil, errTooLarge
	}
	return &Response{StatusCode: hr.StatusCode, Header: hr.Header, Body: b}, nil
}

// errTooLarge is an answer over maxResponseBytes; sending again would not
// shrink it.
var errTooLarge = errors.New("answer larger than 32 MiB")

// errAnswerLost is a failure to read an answer that had begun: the request
// reached the server.
type errAnswerLost struct{ err error }

func (e errAnswerLost) Error() string { return e.err.Error() }
func (e errAnswerLost) Unwrap() error { return e.err }

// pathOf returns target without its query, which may hold values a log
// need not see.
func pathOf(target string) string {
	p, _, _ := strings.Cut(target, "?")
	return p
}

// escape joins path segments, each escaped with url.PathEscape, after "/v1".
func escape(segments ...string) string {
	var b strings.Builder
	b.WriteString("/v1")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
