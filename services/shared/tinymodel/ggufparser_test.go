package tinymodel_test

import (
	"path/filepath"
	"testing"

	gguf "github.com/gpustack/gguf-parser-go"
	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/tinymodel"
)

// The coordinator sizes models with gguf-parser-go, so the tiny model must read back through
// it with the shape the generator promises and a usable memory estimate.
func TestIndependentParserReadsTheModel(t *testing.T) {
	for _, f16 := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "tiny.gguf")
		require.NoError(t, tinymodel.WriteFile(path, tinymodel.Options{F16: f16}))

		file, err := gguf.ParseGGUFFile(path)
		require.NoError(t, err, "f16=%v", f16)
		arch := file.Architecture()
		require.Equal(t, "llama", arch.Architecture)
		require.EqualValues(t, tinymodel.BlockCount, arch.BlockCount)
		require.EqualValues(t, tinymodel.EmbeddingLen, arch.EmbeddingLength)
		require.EqualValues(t, tinymodel.ContextLen, arch.MaximumContextLength)

		// The parser's model size is what the coordinator plans memory with; it must cover
		// the tensors, which make up nearly all of the file.
		require.Greater(t, uint64(file.ModelSize), uint64(float64(len(tinymodel.Bytes(tinymodel.Options{F16: f16})))*0.9), "f16=%v", f16)
		est := file.EstimateLLaMACppRun(gguf.WithLLaMACppContextSize(tinymodel.ContextLen))
		require.NotEmpty(t, est.Devices, "f16=%v", f16)
	}
}
