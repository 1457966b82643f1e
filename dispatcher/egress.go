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
//
// It refuses the networks of the table refused: those of the IANA IPv4 and
// IPv6 Special-Purpose Address Registries (RFC 6890), multicast of both
// families, deprecated site-local, every IPv6 address outside global unicast
// 2000::/3, and the IPv6 forms that embed an IPv4 address. Registries as of
// 2026-12-01: the rows were written from knowledge of the registries and
// checked that day against secondary sources only, as the registries
// themselves could not be fetched.
//
// Addresses that embed an IPv4 address:
//
//   - An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address a.b.c.d:
//     it is how a dual-stack socket writes an IPv4 peer. It is judged, and
//     matched against the allow list, as a.b.c.d.
//   - Every other form is refused as a whole prefix, whatever IPv4 address it
//     embeds: IPv4-compatible ::/96, IPv4-translated (SIIT) ::ffff:0:0:0/96,
//     NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16 and Teredo
//     2001::/32. A webhook receiver has an IPv4 address of its own to dial,
//     and decoding each format is code that can be wrong. So on an IPv6-only
//     host behind DNS64, an IPv4-only receiver is unreachable unless
//     64:ff9b::/96 is allowed.
//
// The allow list (Config.AllowNetworks) wins over the table, but only for the
// form it is written in: allowing 127.0.0.0/8 lets 127.0.0.1 and
// ::ffff:127.0.0.1 through, not ::127.0.0.1 nor 64:ff9b::127.0.0.1, which
// are let through only if the list holds ::/96 or 64:ff9b::/96 (or a
// network inside them). An entry written as IPv4-mapped (::ffff:127.0.0.0/104)
// is the same as its IPv4 one. Zones are ignored: fe80::1%eth0 is fe80::1.
type egressGuard struct {
	allow []netip.Prefix
}

// control is a net.Dialer ControlContext.
func (g egressGuard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrBlockedAddress, address)
	}
	addr := ap.Addr().WithZone("").Unmap()
	if why := g.refuses(addr); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrBlockedAddress, addr, why)
	}
	return nil
}

// refuses returns why addr may not be dialled, or "" if it may.
func (g egressGuard) refuses(addr netip.Addr) string {
	addr = addr.WithZone("").Unmap()
	if !addr.IsValid() {
		return "not an address"
	}
	for _, p := range g.allow {
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:a.b.c.d/n is a.b.c.d/(n-96)
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Contains(addr) {
			return ""
		}
	}
	for _, r := range refused {
		if r.prefix.Contains(addr) {
			return r.why + " (" + r.prefix.String() + ")"
		}
	}
	return ""
}

// refused lists the networks webhooks may not reach, each with the reason
// given in the attempt's error. The first row that holds an address names
// the reason, so a network comes before any larger one that holds it.
//
// Some rows of the registries are marked globally reachable and are refused
// all the same, because no webhook receiver lives there and refusing is the
// safe side: in 192.0.0.0/24, the PCP and TURN anycast addresses 192.0.0.9
// and 192.0.0.10; AS112 192.31.196.0/24, 192.175.48.0/24 and
// 2620:4f:8000::/48 (DNS sinks for reverse lookups of private space); AMT
// relays 192.52.193.0/24 and 2001:3::/32; NAT64 64:ff9b::/96 (see
// egressGuard); and, in 2001::/23, the PCP, TURN and DNS-SD SRP anycast
// addresses 2001:1::1 to 2001:1::3, AS112-v6 2001:4:112::/48, ORCHIDv2
// 2001:20::/28 and DRIP entity tags 2001:30::/28 (identifiers, not hosts).
var refused = []struct {
	prefix netip.Prefix
	why    string
}{
	// IPv4: the IANA IPv4 Special-Purpose Address Registry, and multicast.
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network"`},     // RFC 791; 0.0.0.0/32 "this host", RFC 1122
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},           // RFC 1918
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (CGNAT)"}, // RFC 6598
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},         // RFC 1122
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},    // RFC 3927; cloud metadata lives here
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},        // RFC 1918
	// RFC 6890; holds 192.0.0.0/29 (RFC 7335), the dummy address 192.0.0.8
	// (RFC 7600), PCP and TURN anycast, NAT64 discovery .170-.171 (RFC 8880).
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},                     // TEST-NET-1, RFC 5737
	{netip.MustParsePrefix("192.31.196.0/24"), "AS112"},                          // RFC 7535
	{netip.MustParsePrefix("192.52.193.0/24"), "AMT"},                            // RFC 7450
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast (deprecated)"}, // RFC 7526; also 6a44 relays, RFC 6751
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},                         // RFC 1918
	{netip.MustParsePrefix("192.175.48.0/24"), "AS112"},                          // direct delegation, RFC 7534
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},                     // RFC 2544
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},                  // TEST-NET-2, RFC 5737
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},                   // TEST-NET-3, RFC 5737
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},                          // RFC 5771, IANA IPv4 Multicast Address Space Registry
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},                   // RFC 919, RFC 8190
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},                           // RFC 1112

	// IPv6: the IANA IPv6 Special-Purpose Address Registry, multicast,
	// site-local and the forms that embed an IPv4 address. IPv4-mapped
	// ::ffff:0:0/96 is absent: see egressGuard.
	{netip.MustParsePrefix("::/128"), "unspecified"},                     // RFC 4291
	{netip.MustParsePrefix("::1/128"), "loopback"},                       // RFC 4291
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},     // RFC 4291 §2.5.5.1; not in the registry
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "IPv4-translated (SIIT)"}, // RFC 2765; not in the registry
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},                     // RFC 6052
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64 (local use)"},       // RFC 8215
	{netip.MustParsePrefix("100::/64"), "discard-only"},                  // RFC 6666
	{netip.MustParsePrefix("100:0:0:1::/64"), "dummy"},                   // RFC 9780
	{netip.MustParsePrefix("2001::/32"), "Teredo"},                       // RFC 4380
	// RFC 2928; holds anycast 2001:1::1-3, benchmarking 2001:2::/48 (RFC
	// 5180), AMT, AS112-v6, ORCHID 2001:10::/28 (deprecated), ORCHIDv2
	// (RFC 7343) and DRIP 2001:30::/28 (RFC 9374).
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignments"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},        // RFC 3849
	{netip.MustParsePrefix("2002::/16"), "6to4"},                     // RFC 3056
	{netip.MustParsePrefix("2620:4f:8000::/48"), "AS112"},            // direct delegation, RFC 7534
	{netip.MustParsePrefix("3fff::/20"), "documentation"},            // RFC 9637
	{netip.MustParsePrefix("5f00::/16"), "SRv6 segment identifiers"}, // RFC 9602
	{netip.MustParsePrefix("fc00::/7"), "unique local"},              // RFC 4193
	{netip.MustParsePrefix("fe80::/10"), "link-local"},               // RFC 4291
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated)"},  // RFC 3879
	{netip.MustParsePrefix("ff00::/8"), "multicast"},                 // RFC 4291 §2.7
	// Only 2000::/3 is global unicast (RFC 4291 §2.4, IANA IPv6 Address
	// Space registry); the rest is reserved or unassigned.
	{netip.MustParsePrefix("::/3"), "not global unicast"},
	{netip.MustParsePrefix("4000::/2"), "not global unicast"},
	{netip.MustParsePrefix("8000::/1"), "not global unicast"},
}

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
