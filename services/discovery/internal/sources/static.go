// Package sources turns discovery's configuration into candidate backends: static lists, DNS
// names re-resolved over time, and an opt-in CIDR scan. A candidate is only an address to
// probe; nothing here decides that it is a real backend.
package sources

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// Source names, as they appear in Backend.sources.
const (
	SourceStatic  = "static"
	SourceDefault = "default"
	SourceDNS     = "dns"
	SourceScan    = "scan"
	SourceSelf    = "self-registered"
)

// Default ports of the two kinds of backend.
const (
	OllamaPort = 11434
	RPCPort    = 50052
)

// Candidate is an address that may be a backend of the given kind.
type Candidate struct {
	Kind    commonv1.BackendKind
	Address string // host:port
	Source  string
}

// DefaultPort is the usual port of kind.
func DefaultPort(kind commonv1.BackendKind) int {
	if kind == commonv1.BackendKind_BACKEND_KIND_RPC {
		return RPCPort
	}
	return OllamaPort
}

// ParseAddress accepts what users of SOLLOL and Ollama already write: "host", "host:port",
// "[v6]:port", and for Ollama also OLLAMA_HOST's URL form "http://host:port". The port
// defaults to kind's usual one; a wildcard host (0.0.0.0, as in OLLAMA_HOST=0.0.0.0) means
// this machine, so it becomes 127.0.0.1.
func ParseAddress(kind commonv1.BackendKind, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("empty address")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("%q: %w", s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", fmt.Errorf("%q: scheme %q is not http or https", s, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" {
			return "", fmt.Errorf("%q: a backend address has no path", s)
		}
		s = u.Host
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host (a bare IPv6 address included).
		host, port = strings.Trim(s, "[]"), strconv.Itoa(DefaultPort(kind))
	}
	if host == "" || strings.ContainsAny(host, " /?#@") {
		return "", fmt.Errorf("%q: bad host %q", s, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not 1-65535", s, port)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(n)), nil
}

// Static parses the configured lists. field names the configuration field in errors, so a
// typo points at the flag to fix. Entries may themselves be comma-separated, as in SOLLOL's
// RPC_BACKENDS="h1:50052,h2:50052".
func Static(field string, kind commonv1.BackendKind, entries []string, source string) ([]Candidate, error) {
	var out []Candidate
	for _, entry := range entries {
		for _, part := range strings.Split(entry, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			addr, err := ParseAddress(kind, part)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			out = append(out, Candidate{Kind: kind, Address: addr, Source: source})
		}
	}
	return out, nil
}
