package sources

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// DNSName is a name that may resolve to many backends of one kind — a compose service
// scaled to N containers resolves to N addresses.
type DNSName struct {
	Kind commonv1.BackendKind
	Host string
	Port int
}

// ParseDNSNames parses entries of the form "ollama=name[:port]" or "rpc=name[:port]".
func ParseDNSNames(field string, entries []string) ([]DNSName, error) {
	var out []DNSName
	for _, entry := range entries {
		kindWord, target, ok := strings.Cut(strings.TrimSpace(entry), "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not kind=name[:port] (kind: ollama or rpc)", field, entry)
		}
		var kind commonv1.BackendKind
		switch kindWord {
		case "ollama":
			kind = commonv1.BackendKind_BACKEND_KIND_OLLAMA
		case "rpc":
			kind = commonv1.BackendKind_BACKEND_KIND_RPC
		default:
			return nil, fmt.Errorf("%s: %q: kind %q is not ollama or rpc", field, entry, kindWord)
		}
		addr, err := ParseAddress(kind, target)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		host, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		out = append(out, DNSName{Kind: kind, Host: host, Port: n})
	}
	return out, nil
}

// Resolver is the part of net.Resolver that DNS discovery uses.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// ResolveAll resolves every name into candidates. A name that fails to resolve yields an
// error but does not stop the others; its backends age out through their health.
func ResolveAll(ctx context.Context, r Resolver, names []DNSName) ([]Candidate, []error) {
	var out []Candidate
	var errs []error
	for _, n := range names {
		addrs, err := r.LookupHost(ctx, n.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", n.Host, err))
			continue
		}
		for _, a := range addrs {
			out = append(out, Candidate{Kind: n.Kind, Address: net.JoinHostPort(a, strconv.Itoa(n.Port)), Source: SourceDNS})
		}
	}
	return out, errs
}
