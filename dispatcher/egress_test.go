package dispatcher

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// The tests here judge the egress guard against an oracle that shares no
// table and no code with egress.go: its networks are written again, by hand,
// from the IANA IPv4 and IPv6 Special-Purpose Address Registries (and the
// other registries and RFCs named per row); containment is its own byte
// arithmetic on 16-byte addresses, where an IPv4 address is its IPv4-mapped
// form ::ffff:a.b.c.d; and it extracts the IPv4 address embedded in the
// IPv6 transition forms itself. The guard is only ever called through
// control, the net.Dialer ControlContext, on "ip:port" text.

// oracleRow is a network webhooks must not reach, with addresses inside it
// (its first and last addresses are checked too).
type oracleRow struct {
	cidr     string
	examples []string
}

// oracleRows lists every network the guard must refuse. IPv4-mapped
// ::ffff:0:0/96 (RFC 4291 §2.5.5.2) is not a row: a mapped address is the
// IPv4 address it maps, so the IPv4 rows cover it.
var oracleRows = []oracleRow{
	// IANA IPv4 Special-Purpose Address Registry.
	{"0.0.0.0/8", []string{"0.1.2.3"}},                         // "This network", RFC 791 §3.2
	{"0.0.0.0/32", []string{"0.0.0.0"}},                        // "This host on this network", RFC 1122 §3.2.1.3
	{"10.0.0.0/8", []string{"10.0.0.1", "10.1.2.3"}},           // Private-Use, RFC 1918
	{"100.64.0.0/10", []string{"100.64.0.1", "100.100.1.1"}},   // Shared Address Space, RFC 6598
	{"127.0.0.0/8", []string{"127.0.0.1", "127.1.2.3"}},        // Loopback, RFC 1122 §3.2.1.3
	{"169.254.0.0/16", []string{"169.254.169.254"}},            // Link Local, RFC 3927 (cloud metadata)
	{"172.16.0.0/12", []string{"172.16.0.1", "172.20.1.1"}},    // Private-Use, RFC 1918
	{"192.0.0.0/24", []string{"192.0.0.1", "192.0.0.200"}},     // IETF Protocol Assignments, RFC 6890 §2.1
	{"192.0.0.0/29", []string{"192.0.0.2"}},                    // IPv4 Service Continuity Prefix, RFC 7335
	{"192.0.0.8/32", nil},                                      // IPv4 dummy address, RFC 7600
	{"192.0.0.9/32", nil},                                      // Port Control Protocol Anycast, RFC 7723 (globally reachable)
	{"192.0.0.10/32", nil},                                     // TURN Anycast, RFC 8155 (globally reachable)
	{"192.0.0.170/32", nil},                                    // NAT64/DNS64 Discovery, RFC 8880, RFC 7050 §2.2
	{"192.0.0.171/32", nil},                                    // NAT64/DNS64 Discovery, RFC 8880, RFC 7050 §2.2
	{"192.0.2.0/24", []string{"192.0.2.1"}},                    // Documentation (TEST-NET-1), RFC 5737
	{"192.31.196.0/24", []string{"192.31.196.1"}},              // AS112-v4, RFC 7535 (globally reachable)
	{"192.52.193.0/24", []string{"192.52.193.1"}},              // AMT, RFC 7450 (globally reachable)
	{"192.88.99.0/24", []string{"192.88.99.1", "192.88.99.2"}}, // Deprecated (6to4 Relay Anycast), RFC 7526; .2 is 6a44, RFC 6751
	{"192.168.0.0/16", []string{"192.168.0.1", "192.168.1.1"}}, // Private-Use, RFC 1918
	{"192.175.48.0/24", []string{"192.175.48.6"}},              // Direct Delegation AS112 Service, RFC 7534 (globally reachable)
	{"198.18.0.0/15", []string{"198.18.0.1", "198.19.1.1"}},    // Benchmarking, RFC 2544
	{"198.51.100.0/24", []string{"198.51.100.7"}},              // Documentation (TEST-NET-2), RFC 5737
	{"203.0.113.0/24", []string{"203.0.113.9"}},                // Documentation (TEST-NET-3), RFC 5737
	{"240.0.0.0/4", []string{"240.0.0.1", "250.1.2.3"}},        // Reserved, RFC 1112 §4
	{"255.255.255.255/32", nil},                                // Limited Broadcast, RFC 8190, RFC 919 §7
	// IANA IPv4 Multicast Address Space Registry, RFC 5771.
	{"224.0.0.0/4", []string{"224.0.0.1", "239.255.255.250"}},

	// IANA IPv6 Special-Purpose Address Registry.
	{"::1/128", nil}, // Loopback Address, RFC 4291
	{"::/128", nil},  // Unspecified Address, RFC 4291
	{"64:ff9b::/96", []string{"64:ff9b::7f00:1", "64:ff9b::808:808"}}, // IPv4-IPv6 Translat., RFC 6052 (globally reachable)
	{"64:ff9b:1::/48", []string{"64:ff9b:1::a00:1"}},                  // IPv4-IPv6 Translat. (local use), RFC 8215
	{"100::/64", []string{"100::1"}},                                  // Discard-Only Address Block, RFC 6666
	{"100:0:0:1::/64", []string{"100:0:0:1::1"}},                      // Dummy IPv6 Prefix, RFC 9780
	{"2001::/23", []string{"2001:100::1", "2001:1ff::1"}},             // IETF Protocol Assignments, RFC 2928
	{"2001::/32", []string{"2001:0:4136:e378:8000:63bf:3fff:fdd2"}},   // TEREDO, RFC 4380, RFC 8190
	{"2001:1::1/128", nil},                                            // Port Control Protocol Anycast, RFC 7723 (globally reachable)
	{"2001:1::2/128", nil},                                            // TURN Anycast, RFC 8155 (globally reachable)
	{"2001:1::3/128", nil},                                            // DNS-SD Service Registration Protocol Anycast, RFC 9665 (globally reachable)
	{"2001:2::/48", []string{"2001:2::1"}},                            // Benchmarking, RFC 5180, errata 1752
	{"2001:3::/32", []string{"2001:3::1"}},                            // AMT, RFC 7450 (globally reachable)
	{"2001:4:112::/48", []string{"2001:4:112::1"}},                    // AS112-v6, RFC 7535 (globally reachable)
	{"2001:10::/28", []string{"2001:10::1"}},                          // Deprecated (previously ORCHID), RFC 4843
	{"2001:20::/28", []string{"2001:20::1"}},                          // ORCHIDv2, RFC 7343 (globally reachable)
	{"2001:30::/28", []string{"2001:30::1"}},                          // Drone Remote ID Protocol Entity Tags, RFC 9374 (globally reachable)
	{"2001:db8::/32", []string{"2001:db8::1"}},                        // Documentation, RFC 3849
	{"2002::/16", []string{"2002:7f00:1::", "2002:808:808::1"}},       // 6to4, RFC 3056
	{"2620:4f:8000::/48", []string{"2620:4f:8000::1"}},                // Direct Delegation AS112 Service, RFC 7534 (globally reachable)
	{"3fff::/20", []string{"3fff::1", "3fff:fff::1"}},                 // Documentation, RFC 9637
	{"5f00::/16", []string{"5f00::1"}},                                // Segment Routing (SRv6) SIDs, RFC 9602
	{"fc00::/7", []string{"fc00::1", "fd00:ec2::254"}},                // Unique-Local, RFC 4193, RFC 8190 (fd00:ec2::254: cloud metadata)
	{"fe80::/10", []string{"fe80::1"}},                                // Link-Local Unicast, RFC 4291
	// Elsewhere: multicast (IANA IPv6 Multicast Address Space Registry, RFC
	// 4291 §2.7), deprecated site-local (RFC 3879) and the deprecated forms
	// that embed an IPv4 address, refused whole whatever they embed.
	{"ff00::/8", []string{"ff02::1", "ff05::1:3"}},
	{"fec0::/10", []string{"fec0::1"}},
	{"::/96", []string{"::7f00:1", "::808:808"}},                         // IPv4-compatible, RFC 4291 §2.5.5.1
	{"::ffff:0:0:0/96", []string{"::ffff:0:7f00:1", "::ffff:0:808:808"}}, // IPv4-translated (SIIT), RFC 2765 §2.1
}

// oracleNotGlobalUnicast are IPv6 addresses outside 2000::/3, the only
// block IANA allocates for global unicast (IANA IPv6 Address Space
// registry, RFC 4291 §2.4): reserved or unassigned, refused.
var oracleNotGlobalUnicast = []string{"::1:0:0:0", "1::1", "1fff:ffff::1", "4000::1", "8000::1", "e000::1", "fbff::1"}

// oracleOrdinary are global unicast addresses webhooks may reach, some of
// them just outside a refused network.
var oracleOrdinary = []string{
	"8.8.8.8", "1.1.1.1", "9.9.9.9", "93.184.215.14", "93.184.216.34",
	"1.0.0.0", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
	"126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0",
	"172.15.255.255", "172.32.0.0", "192.0.1.0", "192.0.3.0", "192.88.98.255",
	"192.88.100.0", "192.167.255.255", "192.169.0.0", "198.17.255.255",
	"198.20.0.0", "223.255.255.255",
	"2606:4700:4700::1111", "2001:4860:4860::8888", "2620:fe::fe",
	"2a00:1450:4001:80b::200e", "2606:2800:220:1:248:1893:25c8:1946",
	"2001:200::1", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::1",
	"2003::1", "2620:4f:7fff:ffff::1", "2620:4f:8001::1", "3fff:1000::1",
	"3ffe:ffff::1",
}

// oraclePrefix is a network in the oracle's 16-byte space.
type oraclePrefix struct {
	addr [16]byte
	bits int
}

// oracleParsePrefix reads an IPv4 or IPv6 CIDR; a.b.c.d/n becomes
// ::ffff:a.b.c.d/(96+n).
func oracleParsePrefix(s string) oraclePrefix {
	p := netip.MustParsePrefix(s)
	op := oraclePrefix{addr: p.Addr().As16(), bits: p.Bits()}
	if p.Addr().Is4() {
		op.bits += 96
	}
	return op
}

// holds reports whether b is in p: every one of p's first bits agrees.
func (p oraclePrefix) holds(b [16]byte) bool {
	for i := range 16 {
		n := p.bits - 8*i // bits of the mask in byte i
		if n <= 0 {
			break
		}
		mask := byte(0xff)
		if n < 8 {
			mask = 0xff << (8 - n)
		}
		if b[i]&mask != p.addr[i]&mask {
			return false
		}
	}
	return true
}

// first and last are the lowest and the highest address of p.
func (p oraclePrefix) first() [16]byte { return p.edge(0x00) }
func (p oraclePrefix) last() [16]byte  { return p.edge(0xff) }

func (p oraclePrefix) edge(host byte) [16]byte {
	b := p.addr
	for i := range 16 {
		n := min(max(p.bits-8*i, 0), 8) // network bits in byte i
		mask := byte(0xff << (8 - n))
		b[i] = b[i]&mask | host&^mask
	}
	return b
}

// oracleIsIPv4 reports whether b is an IPv4 address (::ffff:a.b.c.d).
func oracleIsIPv4(b [16]byte) bool {
	return b == [16]byte{10: 0xff, 11: 0xff, 12: b[12], 13: b[13], 14: b[14], 15: b[15]}
}

func oracleIPv4(v4 [4]byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]}
}

// oracleEmbeddedIPv4 returns the IPv4 addresses b embeds, by the transition
// format its prefix names.
func oracleEmbeddedIPv4(b [16]byte) [][4]byte {
	zero := func(s []byte) bool {
		for _, c := range s {
			if c != 0 {
				return false
			}
		}
		return true
	}
	last := [4]byte(b[12:16])
	switch {
	case zero(b[:12]): // IPv4-compatible ::a.b.c.d, RFC 4291 §2.5.5.1
		return [][4]byte{last}
	case zero(b[:8]) && b[8] == 0xff && b[9] == 0xff && zero(b[10:12]): // SIIT ::ffff:0:a.b.c.d, RFC 2765 §2.1
		return [][4]byte{last}
	case string(b[:4]) == "\x00\x64\xff\x9b" && zero(b[4:12]): // NAT64 64:ff9b::a.b.c.d, RFC 6052 §2.2
		return [][4]byte{last}
	case string(b[:6]) == "\x00\x64\xff\x9b\x00\x01": // 64:ff9b:1::/48, RFC 8215: as a /48 (RFC 6052 §2.2, octet 8 skipped) or a /96
		return [][4]byte{{b[6], b[7], b[9], b[10]}, last}
	case b[0] == 0x20 && b[1] == 0x02: // 6to4 2002:AABB:CCDD::/48, RFC 3056 §2
		return [][4]byte{[4]byte(b[2:6])}
	case string(b[:4]) == "\x20\x01\x00\x00": // Teredo: server in octets 4-7, client inverted in 12-15, RFC 4380 §4
		return [][4]byte{[4]byte(b[4:8]), {^b[12], ^b[13], ^b[14], ^b[15]}}
	}
	return nil
}

var oracleSpecialPrefixes = func() []oraclePrefix {
	var ps []oraclePrefix
	for _, r := range oracleRows {
		ps = append(ps, oracleParsePrefix(r.cidr))
	}
	return ps
}()

// oracleSpecial reports whether b is special-purpose: in a row, an IPv6
// address outside 2000::/3, or one that embeds a special IPv4 address.
func oracleSpecial(b [16]byte) bool {
	for _, p := range oracleSpecialPrefixes {
		if p.holds(b) {
			return true
		}
	}
	if !oracleIsIPv4(b) && b[0]&0xe0 != 0x20 {
		return true
	}
	for _, v4 := range oracleEmbeddedIPv4(b) {
		if oracleSpecial(oracleIPv4(v4)) {
			return true
		}
	}
	return false
}

// oracleRefuses reports whether the guard must refuse b with allow: an
// allowed network holds it in the form given, or it is not special.
func oracleRefuses(b [16]byte, allow []oraclePrefix) bool {
	for _, p := range allow {
		if p.holds(b) {
			return false
		}
	}
	return oracleSpecial(b)
}

// oracleText is the "ip:port" texts of b a dialer may give: a.b.c.d:443
// and [::ffff:a.b.c.d]:443 for an IPv4 address, [b]:443 otherwise.
func oracleText(b [16]byte) []string {
	a := netip.AddrFrom16(b)
	if oracleIsIPv4(b) {
		return []string{netip.AddrPortFrom(a.Unmap(), 443).String(), netip.AddrPortFrom(a, 443).String()}
	}
	return []string{netip.AddrPortFrom(a, 443).String()}
}

func oracleAddr(t *testing.T, s string) [16]byte {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("oracle address %q: %v", s, err)
	}
	return a.WithZone("").As16()
}

func guardWith(t testing.TB, allow ...string) egressGuard {
	t.Helper()
	var g egressGuard
	for _, s := range allow {
		g.allow = append(g.allow, netip.MustParsePrefix(s))
	}
	return g
}

// checkControl calls the guard as the dialer does and checks its verdict.
func checkControl(t *testing.T, g egressGuard, address string, refuse bool) {
	t.Helper()
	err := g.control(t.Context(), "tcp", address, nil)
	if err != nil && !errors.Is(err, ErrBlockedAddress) {
		t.Errorf("control(%q) = %v, does not wrap ErrBlockedAddress", address, err)
	}
	if got := err != nil; got != refuse {
		t.Errorf("control(%q) = %v, want refused %v", address, err, refuse)
	}
}

func TestEgressGuardRefusesSpecialPurpose(t *testing.T) {
	t.Parallel()
	g := guardWith(t)
	for _, r := range oracleRows {
		p := oracleParsePrefix(r.cidr)
		addrs := [][16]byte{p.first(), p.last()}
		for _, s := range r.examples {
			addrs = append(addrs, oracleAddr(t, s))
		}
		for _, b := range addrs {
			if !p.holds(b) || !oracleSpecial(b) {
				t.Fatalf("oracle: %v is not in %s", netip.AddrFrom16(b), r.cidr)
			}
			for _, text := range oracleText(b) {
				checkControl(t, g, text, true)
			}
		}
	}
	for _, s := range oracleNotGlobalUnicast {
		b := oracleAddr(t, s)
		if !oracleSpecial(b) {
			t.Fatalf("oracle: %s is not special", s)
		}
		checkControl(t, g, oracleText(b)[0], true)
	}
}

func TestEgressGuardLetsOrdinaryThrough(t *testing.T) {
	t.Parallel()
	g := guardWith(t)
	for _, s := range oracleOrdinary {
		b := oracleAddr(t, s)
		if oracleSpecial(b) {
			t.Fatalf("oracle: %s is special", s)
		}
		for _, text := range oracleText(b) {
			checkControl(t, g, text, false)
		}
	}
}

// The textual forms a dialer may give, the embedded ones the audit found.
func TestEgressGuardEmbeddedForms(t *testing.T) {
	t.Parallel()
	g := guardWith(t)
	tests := []struct {
		address string
		why     string // in the error
	}{
		{"[::7f00:1]:443", "IPv4-compatible"},    // 127.0.0.1
		{"[::127.0.0.1]:443", "IPv4-compatible"}, // the same, dotted
		{"[::ffff:0:7f00:1]:443", "SIIT"},        // 127.0.0.1
		{"[::ffff:0:127.0.0.1]:443", "SIIT"},     // the same, dotted
		{"[::ffff:7f00:1]:443", "loopback"},      // IPv4-mapped 127.0.0.1
		{"[::ffff:127.0.0.1]:443", "loopback"},   // the same, dotted
		{"[::ffff:169.254.169.254]:80", "link-local"},
		{"[64:ff9b::7f00:1]:443", "NAT64"},
		{"[64:ff9b::808:808]:443", "NAT64"},       // refused whole, even for 8.8.8.8
		{"[64:ff9b:1:7f00:0:100::]:443", "NAT64"}, // local-use /48 form of 127.0.0.1
		{"[2002:7f00:1::]:443", "6to4"},
		{"[2002:a00:1::1]:443", "6to4"},                          // 10.0.0.1
		{"[2001:0:a00:1::3f57:fefe]:443", "Teredo"},              // server 10.0.0.1, client 192.168.1.1
		{"[2001:0:4136:e378:8000:63bf:3f57:fefe]:443", "Teredo"}, // public server, client 192.168.1.1
		{"0.0.0.0:80", "this network"},
		{"[::]:80", "unspecified"},
		{"[::1]:443", "loopback"},
		{"[fe80::1%eth0]:80", "link-local"},
		{"[ff02::1%eth0]:80", "multicast"},
		{"[fd00:ec2::254]:80", "unique local"},
	}
	for _, tt := range tests {
		checkControl(t, g, tt.address, true)
		if err := g.control(t.Context(), "tcp", tt.address, nil); err == nil || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("control(%q) = %v, want the reason %q", tt.address, err, tt.why)
		}
	}
	err := g.control(t.Context(), "tcp", "[::ffff:127.0.0.1]:443", nil)
	if want := "address not allowed for webhooks: 127.0.0.1 is loopback (127.0.0.0/8)"; err == nil || err.Error() != want {
		t.Errorf("control error = %v, want %q", err, want)
	}
	for _, bad := range []string{"", "example.com:443", "127.0.0.1", "[::1]", "127.0.0.1:65536", "[fe80::1%]:80"} {
		checkControl(t, g, bad, true)
	}
}

func TestEgressGuardAllowNetworks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		allow   []string
		address string
		refused bool
	}{
		{nil, "127.0.0.1:443", true},
		{[]string{"127.0.0.0/8"}, "127.0.0.1:443", false},
		{[]string{"127.0.0.0/8"}, "127.255.255.254:443", false},
		{[]string{"127.0.0.0/8"}, "[::ffff:127.0.0.1]:443", false}, // a dual-stack dial of 127.0.0.1
		{[]string{"127.0.0.0/8"}, "[::7f00:1]:443", true},          // embedded forms need their own entry
		{[]string{"127.0.0.0/8"}, "[::ffff:0:7f00:1]:443", true},
		{[]string{"127.0.0.0/8"}, "[64:ff9b::7f00:1]:443", true},
		{[]string{"127.0.0.0/8"}, "[2002:7f00:1::]:443", true},
		{[]string{"127.0.0.0/8"}, "[::1]:443", true},
		{[]string{"127.0.0.0/8"}, "10.0.0.1:443", true},
		{[]string{"127.0.0.0/8"}, "8.8.8.8:443", false},
		{[]string{"10.0.0.0/8"}, "10.1.2.3:443", false},
		{[]string{"10.0.0.0/8"}, "10.255.255.255:443", false},
		{[]string{"10.0.0.0/8"}, "[::ffff:10.1.2.3]:443", false},
		{[]string{"10.0.0.0/8"}, "[2002:a01:203::]:443", true},
		{[]string{"10.0.0.0/8"}, "172.16.0.1:443", true},
		{[]string{"10.0.0.0/8"}, "127.0.0.1:443", true},
		{[]string{"::ffff:127.0.0.0/104"}, "127.0.0.1:443", false}, // the mapped entry is the IPv4 one
		{[]string{"::ffff:127.0.0.0/104"}, "[::ffff:127.0.0.1]:443", false},
		{[]string{"::ffff:127.0.0.0/104"}, "[::7f00:1]:443", true},
		{[]string{"::1/128"}, "[::1]:443", false},
		{[]string{"::1/128"}, "[::]:443", true},
		{[]string{"::1/128"}, "127.0.0.1:443", true},
		{[]string{"fe80::/10"}, "[fe80::1%eth0]:80", false}, // zones are ignored
		{[]string{"fe80::/10"}, "[fe80::1]:80", false},
		{[]string{"64:ff9b::/96"}, "[64:ff9b::808:808]:443", false}, // DNS64
		{[]string{"64:ff9b::/96"}, "[64:ff9b::7f00:1]:443", false},  // the form is listed
		{[]string{"64:ff9b::/96"}, "127.0.0.1:443", true},
		{[]string{"::/96"}, "[::7f00:1]:443", false},
		// The cases of the former TestEgressGuard.
		{[]string{"10.1.0.0/16", "::1/128"}, "93.184.216.34:443", false},
		{[]string{"10.1.0.0/16", "::1/128"}, "[2606:2800:220:1:248:1893:25c8:1946]:443", false},
		{[]string{"10.1.0.0/16", "::1/128"}, "127.0.0.1:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "127.9.9.9:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[::1]:443", false},
		{[]string{"10.1.0.0/16", "::1/128"}, "[::ffff:127.0.0.1]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "10.0.0.1:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "10.1.2.3:443", false},
		{[]string{"10.1.0.0/16", "::1/128"}, "[::ffff:10.1.2.3]:443", false},
		{[]string{"10.1.0.0/16", "::1/128"}, "172.16.0.1:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "192.168.1.1:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "169.254.169.254:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[fe80::1]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[fc00::1]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[fd12:3456::1]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "0.0.0.0:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[::]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "224.0.0.1:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[ff02::1]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "100.64.0.1:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "255.255.255.255:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[64:ff9b::7f00:1]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "[2002:7f00:1::]:443", true},
		{[]string{"10.1.0.0/16", "::1/128"}, "198.18.0.1:443", true},
	}
	for _, tt := range tests {
		checkControl(t, guardWith(t, tt.allow...), tt.address, tt.refused)
	}
}

// FuzzEgressGuard checks the guard, through control, against the oracle on
// any address: raw is an IPv6 (16 bytes or more) or IPv4 address (4 to 15
// bytes); form&0x7f, from 1, instead embeds raw's first 4 bytes as an IPv4
// address in a transition form, the rest of raw filling the form's other
// bits; form&0x80 adds a zone.
func FuzzEgressGuard(f *testing.F) {
	loopback, ordinary := []byte{127, 0, 0, 1}, []byte{8, 8, 8, 8}
	for form := range uint8(8) {
		f.Add(loopback, form, uint16(443))
		f.Add(ordinary, form, uint16(443))
	}
	f.Add([]byte{12: 0x7f, 15: 1}, uint8(0), uint16(443))                                               // ::7f00:1, the audit's IPv4-compatible
	f.Add([]byte{8: 0xff, 9: 0xff, 12: 0x7f, 15: 1}, uint8(0), uint16(443))                             // ::ffff:0:7f00:1, the audit's SIIT
	f.Add([]byte{10: 0xff, 11: 0xff, 12: 0x7f, 15: 1}, uint8(0), uint16(443))                           // ::ffff:7f00:1
	f.Add([]byte{10, 1, 2, 3}, uint8(2), uint16(80))                                                    // ::10.1.2.3, allowed only as IPv4
	f.Add([]byte{192, 168, 7, 9}, uint8(1), uint16(80))                                                 // allowed by a mapped entry
	f.Add([]byte{65, 54, 227, 120, 0x80, 0, 0x63, 0xbf, 0x3f, 0x57, 0xfe, 0xfe}, uint8(7), uint16(443)) // Teredo, client 192.168.1.1
	f.Add([]byte{0xfe, 0x80, 15: 1}, uint8(0x80), uint16(80))                                           // fe80::1%eth0
	f.Add([]byte{0x26, 0x06, 0x47, 0x00, 0x47, 0x00, 14: 0x11, 15: 0x11}, uint8(0), uint16(443))
	f.Add([]byte{93, 184, 215, 14}, uint8(0), uint16(443))

	allow := []string{"10.1.0.0/16", "::ffff:192.168.7.0/120", "::1/128", "2001:db8:1::/48", "64:ff9b::a01:0/112"}
	g := guardWith(f, allow...)
	var oracleAllow []oraclePrefix
	for _, s := range allow {
		oracleAllow = append(oracleAllow, oracleParsePrefix(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte, form uint8, port uint16) {
		b, ok := fuzzAddress(raw, form&0x7f)
		if !ok {
			return
		}
		a := netip.AddrFrom16(b)
		if form&0x7f == 0 && len(raw) < 16 {
			a = a.Unmap() // plain IPv4 text
		}
		if form&0x80 != 0 {
			a = a.WithZone("eth0") // dropped for IPv4
		}
		address := netip.AddrPortFrom(a, port).String()
		err := g.control(t.Context(), "tcp", address, nil)
		if err != nil && !errors.Is(err, ErrBlockedAddress) {
			t.Fatalf("control(%q) = %v, does not wrap ErrBlockedAddress", address, err)
		}
		if want := oracleRefuses(b, oracleAllow); (err != nil) != want {
			t.Fatalf("control(%q) = %v, oracle says refuse %v", address, err, want)
		}
	})
}

// fuzzAddress builds the 16-byte address FuzzEgressGuard dials.
func fuzzAddress(raw []byte, form uint8) ([16]byte, bool) {
	var b [16]byte
	switch {
	case form == 0 && len(raw) >= 16:
		return [16]byte(raw[:16]), true
	case len(raw) < 4:
		return b, false
	}
	v4, rest := [4]byte(raw[:4]), raw[4:]
	switch form {
	case 0, 1: // IPv4, IPv4-mapped
		return oracleIPv4(v4), true
	case 2: // IPv4-compatible ::a.b.c.d
		copy(b[12:], v4[:])
	case 3: // SIIT ::ffff:0:a.b.c.d
		b[8], b[9] = 0xff, 0xff
		copy(b[12:], v4[:])
	case 4: // NAT64 64:ff9b::a.b.c.d
		copy(b[:], "\x00\x64\xff\x9b")
		copy(b[12:], v4[:])
	case 5: // local-use NAT64 as a /48: 64:ff9b:1:AABB:00CC:DD..
		copy(b[:], "\x00\x64\xff\x9b\x00\x01")
		b[6], b[7], b[9], b[10] = v4[0], v4[1], v4[2], v4[3]
		copy(b[11:], rest)
	case 6: // 6to4 2002:AABB:CCDD::/48
		copy(b[:], "\x20\x02")
		copy(b[2:], v4[:])
		copy(b[6:], rest)
	case 7: // Teredo, v4 the server, rest the flags, port and client
		copy(b[:], "\x20\x01\x00\x00")
		copy(b[4:], v4[:])
		copy(b[8:], rest)
	default: // raw's first 16 bytes, zero-padded
		copy(b[:], raw)
	}
	return b, true
}
