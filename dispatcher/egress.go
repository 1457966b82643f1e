package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrBlockedAddress is wrapped by the error of an attempt whose target
// resolved to an address webhooks may not reach.
var ErrBlockedAddress = errors.New("address not allowed for webhooks")

// egressGuard refuses connections to special-purpose addresses unless an
// allowed network holds them. It runs in net.Dialer.ControlContext, on the
// address actually dialled after DNS resolution, so a name that resolves
// (or re-resolves) to an internal address cannot get through.
type egressGuard struct {
	allow []netip.Prefix
}

// control is a net.Dialer ControlContext.
func (g egressGuard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrBlockedAddress, address)
	}
	if why := g.refuses(ap.Addr()); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrBlockedAddress, ap.Addr().Unmap(), why)
	}
	return nil
}

// refuses returns why addr may not be dialled, or "" if it may.
func (g egressGuard) refuses(addr netip.Addr) string {
	addr = addr.Unmap().WithZone("")
	for _, p := range g.allow {
		if p.Contains(addr) {
			return ""
		}
	}
	switch {
	case !addr.IsValid():
		return "not an address"
	case addr.IsUnspecified():
		return "unspecified"
	case addr.IsLoopback():
		return "loopback"
	case addr.IsPrivate():
		return "private"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast():
		return "link-local"
	case addr.IsMulticast(), addr.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, p := range specialPurpose {
		if p.Contains(addr) {
			return "special-purpose (" + p.String() + ")"
		}
	}
	return ""
}

// specialPurpose lists the IANA special-purpose ranges that net/netip's
// predicates do not cover, including the IPv6 ranges that embed an IPv4
// address (NAT64, 6to4, Teredo) and so could reach a refused one.
var specialPurpose = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network"
		"100.64.0.0/10",   // shared address space (CGNAT)
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"240.0.0.0/4",     // reserved, and broadcast
		"64:ff9b::/96",    // NAT64
		"64:ff9b:1::/48",  // local NAT64
		"100::/64",        // discard
		"2001::/23",       // IETF protocol assignments, Teredo
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4
		"3fff::/20",       // documentation
		"fec0::/10",       // site-local (deprecated)
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// newTransport returns the HTTP transport of webhook attempts: the egress
// guard at dial time, no proxy (a proxy would dial for us, unguarded), and
// enough idle keep-alive connections for every worker.
func newTransport(allow []netip.Prefix, timeout time.Duration, conns int) *http.Transport {
	dialer := &net.Dialer{
		Timeout:        min(timeout, 10*time.Second),
		KeepAlive:      30 * time.Second,
		ControlContext: egressGuard{allow: allow}.control,
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0, // no limit across hosts
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(timeout, 10*time.Second),
		ExpectContinueTimeout: time.Second,
	}
}

// newHTTPClient returns the client of webhook attempts. It never follows
// a redirect: the 3xx answer is the attempt's result, a failure.
func newHTTPClient(t http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
