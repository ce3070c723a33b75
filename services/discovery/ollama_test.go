package discovery_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

func TestFindsRealOllamaFromStaticConfig(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.OllamaNodes = config.StringList{"http://" + ollama.Addr()}
	}))

	b := r.waitBackend(t, ollama.Addr(), "healthy with the tiny model", func(b *commonv1.Backend) bool {
		return b.GetHealth() == healthy && len(b.GetInstalledModels()) == 1
	})
	require.Equal(t, kindOllama, b.GetKind())
	require.Equal(t, []string{"static"}, b.GetSources())
	require.Equal(t, ollamatest.Version, b.GetVersion())
	m := b.GetInstalledModels()[0]
	require.Equal(t, "tiny:latest", m.GetName())
	require.Positive(t, m.GetSizeBytes())
	require.Equal(t, "llama", m.GetFamily())
	require.NotEmpty(t, m.GetDigest())
	// /api/show: what the model can do, and its GGUF shape.
	require.Contains(t, m.GetCapabilities(), "completion")
	require.EqualValues(t, tinymodel.ContextLen, m.GetContextLength())
	require.EqualValues(t, tinymodel.BlockCount*tinymodel.HeadCountKV*2*(tinymodel.EmbeddingLen/tinymodel.HeadCount)*2, m.GetKvBytesPerToken(),
		"layers x KV heads x (key + value length) x 2 bytes")
	require.Positive(t, b.GetLatency().AsDuration())
	require.NotNil(t, b.GetLastSeen())

	// The same view in Prometheus.
	require.Eventually(t, func() bool {
		n, ok := r.metric(t, "sollol_discovery_backends", "healthy", "ollama") // labels health, kind
		return ok && n == 1
	}, 10*time.Second, 20*time.Millisecond, "one healthy Ollama backend in the metrics")
	leader, _ := r.metric(t, "sollol_discovery_leader")
	require.Equal(t, 1.0, leader, "the only replica leads")
	probes, _ := r.metric(t, "sollol_discovery_probes_total")
	require.Positive(t, probes)
}

func TestFindsRealOllamaByLoopbackScanAndRejectsItAsRPCServer(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	cluster := etcdtest.Start(t)
	port := portOf(t, ollama.Addr())
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.Scan.CIDRs = config.StringList{"127.0.0.1/32"}
		c.Scan.OllamaPorts = config.StringList{port}
		// The same open port is also offered as an rpc-server: the ggml-rpc handshake must
		// reject it, however open the port is.
		c.Scan.RPCPorts = config.StringList{port}
	}))

	b := r.waitBackend(t, ollama.Addr(), "found by the scan", healthIs(healthy))
	require.Equal(t, []string{"scan"}, b.GetSources())
	require.True(t, slices.ContainsFunc(b.GetInstalledModels(), func(m *commonv1.InstalledModel) bool { return m.GetName() == "tiny:latest" }))

	_, scans, _ := r.svc.Counters()
	require.Positive(t, scans)
	for _, other := range r.backends(t, false) {
		require.NotEqual(t, kindRPC, other.GetKind(), "an Ollama port was listed as an rpc-server: %v", other)
	}
}

// A DNS name that resolves to several addresses (here "localhost": 127.0.0.1 and perhaps
// ::1) yields the backends that answer, listed once, as found by DNS.
func TestFindsOllamaThroughADNSName(t *testing.T) {
	ollama := ollamatest.Start(t)
	cluster := etcdtest.Start(t)
	port := portOf(t, ollama.Addr())
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.DNSNames = config.StringList{"ollama=localhost:" + port}
	}))
	b := r.waitBackend(t, ollama.Addr(), "found through DNS", healthIs(healthy))
	require.Equal(t, []string{"dns"}, b.GetSources())
	require.Len(t, r.backends(t, false), 1)
}
