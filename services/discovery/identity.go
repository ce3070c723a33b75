package discovery

import (
	"net"
	"os"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// localHost recognises this machine's own addresses, so "127.0.0.1:11434",
// "localhost:11434" and "192.168.1.5:11434" found by different sources are one backend, as
// they are one Ollama (the Python SOLLOL listed them twice).
type localHost struct {
	name string
	ips  map[string]bool
}

func newLocalHost() *localHost {
	h := &localHost{ips: map[string]bool{}}
	h.name, _ = os.Hostname()
	if h.name == "" {
		h.name = "localhost"
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				h.ips[n.IP.String()] = true
			}
		}
	}
	return h
}

func (h *localHost) isLocal(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || h.ips[ip.String()])
}

// backendID is the stable identity of a backend: its kind and address, with every local
// address folded into this machine's host name.
func (h *localHost) backendID(kind commonv1.BackendKind, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return kindWord(kind) + "@" + addr
	}
	if h.isLocal(host) {
		host = h.name
	}
	return kindWord(kind) + "@" + net.JoinHostPort(strings.ToLower(host), port)
}

// kindWord is the short name of a kind used in ids and logs.
func kindWord(kind commonv1.BackendKind) string {
	switch kind {
	case commonv1.BackendKind_BACKEND_KIND_OLLAMA:
		return "ollama"
	case commonv1.BackendKind_BACKEND_KIND_RPC:
		return "rpc"
	case commonv1.BackendKind_BACKEND_KIND_COORDINATOR:
		return "coordinator"
	default:
		return "unknown"
	}
}
