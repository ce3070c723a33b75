package coordinator_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

func TestListModelsSizesEveryModelFromItsGGUF(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	dir := t.TempDir()
	require.NoError(t, tinymodel.WriteFile(filepath.Join(dir, "half.gguf"), tinymodel.Options{Seed: 7, F16: true}))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.gguf"), []byte("not a gguf file"), 0o644))
	r := w.start(w.config(func(c *coordinator.Config) { c.ModelDirs = []string{dir} }))

	resp, err := r.client.ListModels(ctxTimeout(t, time.Minute), &coordinatorv1.ListModelsRequest{})
	require.NoError(t, err)
	byName := map[string]*coordinatorv1.ModelInfo{}
	var names []string
	for _, m := range resp.GetModels() {
		byName[m.GetName()] = m
		names = append(names, m.GetName())
	}
	require.Equal(t, []string{"broken", "half", "tiny"}, names, "every model of every source, sorted")

	require.Contains(t, byName["broken"].GetError(), "not a readable GGUF file")
	require.Zero(t, byName["broken"].GetBaseBytes())

	for name, source := range map[string]string{"tiny": "mapping", "half": "folder"} {
		m := byName[name]
		require.Empty(t, m.GetError(), name)
		require.Equal(t, source, m.GetSource(), name)
		require.Equal(t, "llama", m.GetArchitecture(), name)
		require.EqualValues(t, tinymodel.BlockCount, m.GetLayers(), name)
		require.EqualValues(t, tinymodel.ContextLen, m.GetMaxContext(), name)
		path := w.models[name]
		if name == "half" {
			path = filepath.Join(dir, "half.gguf")
		}
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.EqualValues(t, st.Size(), m.GetFileBytes(), name)
		// The line the router sizes with agrees with the estimate placement starts from.
		gm, err := placement.Inspect(path)
		require.NoError(t, err)
		need := placement.Need(gm, placement.Request{Context: 2048, Parallel: 1})
		line := m.GetBaseBytes() + 2048*m.GetKvBytesPerToken()
		require.InDelta(t, float64(need), float64(line), float64(need)*0.05, name)
		require.Positive(t, m.GetKvBytesPerToken(), name)
	}
	require.Less(t, byName["half"].GetFileBytes(), byName["tiny"].GetFileBytes(), "f16 weights make a smaller file")
	require.Empty(t, w.llamaProcesses("tiny"), "listing starts nothing")
}
