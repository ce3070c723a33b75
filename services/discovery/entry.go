package discovery

import (
	"maps"
	"net"
	"slices"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
	"github.com/sollol/mesh/services/discovery/internal/sources"
)

// entry is one backend as the tracker knows it.
type entry struct {
	id   string
	kind commonv1.BackendKind
	// addresses maps every address a source reported for this backend to that source.
	addresses map[string]string
	// sources maps a source name to the last time it reported the backend.
	sources   map[string]time.Time
	labels    map[string]string
	health    health.Tracker
	nextProbe time.Time
	probing   bool
	everUp    bool
	lastUp    time.Time
	downSince time.Time
	// published is what etcd holds for it, and when it was written.
	published   *commonv1.Backend
	publishedAt time.Time
	lastErr     string
}

func (e *entry) hasSource(s string) bool { _, ok := e.sources[s]; return ok }

func removeSource(e *entry, source string) {
	delete(e.sources, source)
	for addr, s := range e.addresses {
		if s == source {
			delete(e.addresses, addr)
		}
	}
}

// listed says whether the backend belongs in etcd: configured and self-registered ones
// always (a dead configured node should be visible as down), guessed ones once they answered.
func (e *entry) listed() bool {
	return e.hasSource(sources.SourceStatic) || e.hasSource(sources.SourceSelf) || e.everUp
}

// address picks the address to publish: the one from the most trusted source, and among
// equals a non-loopback one, which other machines can dial.
func (e *entry) address() string {
	rank := map[string]int{sources.SourceStatic: 0, sources.SourceSelf: 1, sources.SourceDNS: 2, sources.SourceScan: 3, sources.SourceDefault: 4}
	addrs := slices.Collect(maps.Keys(e.addresses))
	slices.SortFunc(addrs, func(a, b string) int {
		if d := rank[e.addresses[a]] - rank[e.addresses[b]]; d != 0 {
			return d
		}
		if la, lb := isLoopback(a), isLoopback(b); la != lb {
			if la {
				return 1
			}
			return -1
		}
		return compareStrings(a, b)
	})
	if len(addrs) == 0 {
		return ""
	}
	return addrs[0]
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func isLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
