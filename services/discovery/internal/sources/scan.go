package sources

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// MaxScanHosts bounds one scan range: a /16 at most. Larger ranges are almost always a typo
// and would take hours at a polite rate.
const MaxScanHosts = 1 << 16

// ScanPlan is a validated scan: which ranges, which ports per kind, and how politely.
type ScanPlan struct {
	Prefixes []netip.Prefix
	Ports    map[commonv1.BackendKind][]int
	// Concurrency bounds simultaneous connection attempts.
	Concurrency int
	// PerSecond bounds connection attempts per second.
	PerSecond int
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
}

// ParsePrefixes validates scan ranges. Public ranges are refused unless allowPublic: the
// rpc-server is unauthenticated and has had remote-code-execution bugs, and scanning other
// people's networks is not ours to do.
func ParsePrefixes(field string, cidrs []string, allowPublic bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a CIDR range: %w", field, c, err)
		}
		p = p.Masked()
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%s: %q: only IPv4 ranges can be scanned", field, c)
		}
		if hosts := 1 << (32 - p.Bits()); hosts > MaxScanHosts {
			return nil, fmt.Errorf("%s: %q has %d addresses; the limit is %d (a /16)", field, c, hosts, MaxScanHosts)
		}
		if !allowPublic && !isPrivate(p) {
			return nil, fmt.Errorf("%s: %q is not a private, loopback or link-local range; refusing to scan it without --discovery.scan-allow-public", field, c)
		}
		out = append(out, p)
	}
	return out, nil
}

// cgnat is the carrier-grade NAT range that overlay networks such as Tailscale use.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

func isPrivate(p netip.Prefix) bool {
	first := p.Addr()
	last := lastAddr(p)
	ok := func(a netip.Addr) bool {
		return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || cgnat.Contains(a)
	}
	// Both ends private and the range no wider than a private block means all of it is.
	return ok(first) && ok(last)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Dialer opens a TCP connection; net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Scan tries every address and port of the plan and returns those that accept a TCP
// connection, as candidates for the probes to verify. It honours the plan's concurrency and
// rate limits and stops early when ctx ends.
func Scan(ctx context.Context, plan ScanPlan, d Dialer) []Candidate {
	type job struct {
		kind commonv1.BackendKind
		addr string
	}
	jobs := make(chan job)
	var (
		mu  sync.Mutex
		out []Candidate
		wg  sync.WaitGroup
	)
	workers := max(plan.Concurrency, 1)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				dctx, cancel := context.WithTimeout(ctx, plan.DialTimeout)
				conn, err := d.DialContext(dctx, "tcp", j.addr)
				cancel()
				if err != nil {
					continue
				}
				_ = conn.Close()
				mu.Lock()
				out = append(out, Candidate{Kind: j.kind, Address: j.addr, Source: SourceScan})
				mu.Unlock()
			}
		}()
	}

	interval := time.Second / time.Duration(max(plan.PerSecond, 1))
	tick := time.NewTicker(interval)
	defer tick.Stop()
feed:
	for _, p := range plan.Prefixes {
		for a := p.Addr(); p.Contains(a); a = a.Next() {
			for kind, ports := range plan.Ports {
				for _, port := range ports {
					select {
					case <-ctx.Done():
						break feed
					case <-tick.C:
					}
					select {
					case jobs <- job{kind: kind, addr: net.JoinHostPort(a.String(), strconv.Itoa(port))}:
					case <-ctx.Done():
						break feed
					}
				}
			}
		}
	}
	close(jobs)
	wg.Wait()
	return out
}
