package placement

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/tinymodel"
)

func tiny(t *testing.T) *Model {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, tinymodel.WriteFile(path, tinymodel.Options{}))
	var in Inspector
	m, err := in.Inspect(path)
	require.NoError(t, err)
	again, err := in.Inspect(path)
	require.NoError(t, err)
	require.Same(t, m, again, "sized once")
	return m
}

func TestInspectReadsTheShape(t *testing.T) {
	m := tiny(t)
	require.Equal(t, "llama", m.Architecture)
	require.EqualValues(t, tinymodel.BlockCount, m.Layers)
	require.EqualValues(t, tinymodel.ContextLen, m.MaxContext)
	_, err := Inspect(filepath.Join(t.TempDir(), "missing.gguf"))
	require.Error(t, err)
}

func TestPlanUsesTheFewestBackendsMostFreeFirst(t *testing.T) {
	m := tiny(t)
	req := Request{Context: 1024, Parallel: 4}
	need := Need(m, req)
	require.Greater(t, need, uint64(m.FileSize), "weights plus KV cache plus compute")
	backends := []Backend{{Address: "a:1", Free: []uint64{need * 2}}, {Address: "b:1", Free: []uint64{need * 10}}, {Address: "c:1", Free: []uint64{need * 3}}}
	p, err := Plan(m, req, backends)
	require.NoError(t, err)
	require.Equal(t, []string{"b:1"}, p.Backends, "one backend is enough; the one with the most free memory")
	require.Equal(t, []float32{1}, p.Split)
	require.Equal(t, req, p.Request)
	require.LessOrEqual(t, p.Total, need*10)
}

func TestPlanSplitsInProportionToFreeMemory(t *testing.T) {
	m := tiny(t)
	req := Request{Context: 1024, Parallel: 4}
	need := Need(m, req)
	// Two devices on one server, and a second server: neither alone has room.
	backends := []Backend{{Address: "a:1", Free: []uint64{need * 3 / 4, need / 4}}, {Address: "b:1", Free: []uint64{need / 2}}}
	p, err := Plan(m, req, backends)
	if err == nil {
		require.NotEmpty(t, p.Backends)
		require.Len(t, p.Split, len(p.DeviceNeed))
		var sum float32
		for _, s := range p.Split {
			sum += s
		}
		require.InDelta(t, 1, sum, 1e-5)
		return
	}
	// The tiny model's two layers split coarsely; what matters is the figures.
	var nf *NoFitError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, need*3/4+need/4+need/2, nf.Available)
	require.Positive(t, nf.Needed)
}

func TestDoesNotFitGivesTheFigures(t *testing.T) {
	m := tiny(t)
	req := Request{Context: 1024, Parallel: 4}
	_, err := Plan(m, req, []Backend{{Address: "a:1", Free: []uint64{1 << 20}}, {Address: "b:1", Free: []uint64{0}}})
	var nf *NoFitError
	require.ErrorAs(t, err, &nf)
	require.EqualValues(t, 1<<20, nf.Available)
	require.Contains(t, nf.Error(), "a:1 1.0 MiB free")
	require.Contains(t, nf.Error(), "context 1024 over 4 slots")

	_, err = Plan(m, req, nil)
	require.ErrorAs(t, err, &nf)
	require.Contains(t, nf.Error(), "no rpc backend is available")
}

func TestBytes(t *testing.T) {
	require.Equal(t, "512 B", Bytes(512))
	require.Equal(t, "2 KiB", Bytes(2048))
	require.Equal(t, "1.5 MiB", Bytes(3<<19))
	require.Equal(t, "24.0 GiB", Bytes(24<<30))
}

func TestProfileIsALineThroughTheEstimates(t *testing.T) {
	m := tiny(t)
	base, perToken := Profile(m)
	require.Positive(t, perToken, "the KV cache grows with the context")
	require.Positive(t, base)
	// The line reproduces the estimator at other contexts, within a small error (compute
	// buffers are not quite linear in the context).
	for _, c := range []uint32{512, 4096, 32768} {
		want := Need(m, Request{Context: c, Parallel: 1})
		got := base + perToken*uint64(c)
		require.InDelta(t, float64(want), float64(got), float64(want)*0.05, "context %d: estimator %d, line %d", c, want, got)
	}
}
