package sources_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/sources"
)

const (
	ollama = commonv1.BackendKind_BACKEND_KIND_OLLAMA
	rpc    = commonv1.BackendKind_BACKEND_KIND_RPC
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		kind    commonv1.BackendKind
		in, out string
		err     string
	}{
		{ollama, "gpu1", "gpu1:11434", ""},
		{ollama, "GPU1:8080", "gpu1:8080", ""},
		{ollama, "http://10.0.0.2:11434", "10.0.0.2:11434", ""},
		{ollama, "http://10.0.0.2", "10.0.0.2:11434", ""},
		{ollama, "0.0.0.0", "127.0.0.1:11434", ""},
		{ollama, "[::1]:11434", "[::1]:11434", ""},
		{rpc, "10.0.0.3", "10.0.0.3:50052", ""},
		{rpc, "10.0.0.3:0", "", "port"},
		{rpc, "10.0.0.3:99999", "", "port"},
		{ollama, "ftp://x", "", "scheme"},
		{ollama, "http://x/api", "", "no path"},
		{ollama, "", "", "empty"},
		{ollama, "a b:1", "", "bad host"},
	}
	for _, tt := range tests {
		got, err := sources.ParseAddress(tt.kind, tt.in)
		if tt.err != "" {
			require.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.out, got, tt.in)
	}
}

func TestStaticAcceptsSollolListsAndNamesTheField(t *testing.T) {
	got, err := sources.Static("rpc_backends", rpc, []string{"10.0.0.1:50052,10.0.0.2", " "}, sources.SourceStatic)
	require.NoError(t, err)
	require.Equal(t, []sources.Candidate{
		{Kind: rpc, Address: "10.0.0.1:50052", Source: "static"},
		{Kind: rpc, Address: "10.0.0.2:50052", Source: "static"},
	}, got)

	_, err = sources.Static("discovery.rpc-backends", rpc, []string{"10.0.0.1:x"}, sources.SourceStatic)
	require.ErrorContains(t, err, "discovery.rpc-backends")
}

func TestParseDNSNames(t *testing.T) {
	got, err := sources.ParseDNSNames("dns", []string{"ollama=ollama", "rpc=rpc-server:6000"})
	require.NoError(t, err)
	require.Equal(t, []sources.DNSName{{Kind: ollama, Host: "ollama", Port: 11434}, {Kind: rpc, Host: "rpc-server", Port: 6000}}, got)
	_, err = sources.ParseDNSNames("dns", []string{"ollama"})
	require.ErrorContains(t, err, "kind=name")
	_, err = sources.ParseDNSNames("dns", []string{"vllm=x"})
	require.ErrorContains(t, err, `kind "vllm"`)
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if addrs, ok := f[host]; ok {
		return addrs, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestResolveAllKeepsGoingPastAFailedName(t *testing.T) {
	names := []sources.DNSName{{Kind: ollama, Host: "missing", Port: 11434}, {Kind: ollama, Host: "ollama", Port: 11434}}
	got, errs := sources.ResolveAll(context.Background(), fakeResolver{"ollama": {"172.18.0.2", "172.18.0.3"}}, names)
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], "missing")
	require.Equal(t, []sources.Candidate{
		{Kind: ollama, Address: "172.18.0.2:11434", Source: "dns"},
		{Kind: ollama, Address: "172.18.0.3:11434", Source: "dns"},
	}, got)
}

func TestParsePrefixesRefusesPublicAndHugeRanges(t *testing.T) {
	for _, ok := range []string{"127.0.0.1/32", "10.1.0.0/16", "192.168.1.0/24", "172.20.0.0/16", "100.100.0.0/16", "169.254.0.0/16"} {
		_, err := sources.ParsePrefixes("scan", []string{ok}, false)
		require.NoError(t, err, ok)
	}
	_, err := sources.ParsePrefixes("discovery.scan-cidrs", []string{"8.8.8.0/24"}, false)
	require.ErrorContains(t, err, "refusing")
	require.ErrorContains(t, err, "discovery.scan-cidrs")
	_, err = sources.ParsePrefixes("scan", []string{"8.8.8.0/24"}, true)
	require.NoError(t, err, "forced public scans are allowed")
	_, err = sources.ParsePrefixes("scan", []string{"10.0.0.0/8"}, false)
	require.ErrorContains(t, err, "limit")
	_, err = sources.ParsePrefixes("scan", []string{"10.0.0.300/24"}, false)
	require.ErrorContains(t, err, "not a CIDR")
}

// TestScanFindsOpenPortsOnLoopback scans 127.0.0.1 with two listening ports and one closed.
func TestScanFindsOpenPortsOnLoopback(t *testing.T) {
	open1 := listen(t)
	open2 := listen(t)
	closed := listen(t)
	closedPort := port(t, closed)
	require.NoError(t, closed.Close())

	plan := sources.ScanPlan{
		Prefixes:    []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Ports:       map[commonv1.BackendKind][]int{ollama: {port(t, open1), closedPort}, rpc: {port(t, open2)}},
		Concurrency: 2,
		PerSecond:   1000,
		DialTimeout: time.Second,
	}
	got := sources.Scan(context.Background(), plan, &net.Dialer{})
	require.ElementsMatch(t, []sources.Candidate{
		{Kind: ollama, Address: open1.Addr().String(), Source: "scan"},
		{Kind: rpc, Address: open2.Addr().String(), Source: "scan"},
	}, got)
}

func listen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l
}

func port(t *testing.T, l net.Listener) int {
	_, p, err := net.SplitHostPort(l.Addr().String())
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}
