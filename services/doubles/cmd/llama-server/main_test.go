package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParsesTheRealCommandLine(t *testing.T) {
	o, err := parse([]string{"--model", "m.gguf", "--rpc", "127.0.0.1:1,127.0.0.1:2", "-ngl", "99", "-c", "1024", "-np", "4",
		"-t", "1", "--host", "127.0.0.1", "--port", "8081", "-ts", "3,1", "--no-webui", "--double-load-time", "2s"})
	require.NoError(t, err)
	require.Equal(t, "m.gguf", o.Model)
	require.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, o.RPC)
	require.Equal(t, 99, o.GPULayers)
	require.Equal(t, 1024, o.CtxSize)
	require.Equal(t, 4, o.Parallel)
	require.Equal(t, 8081, o.Port)
	require.Equal(t, []float64{3, 1}, o.TensorSplit)
	require.Equal(t, 2*time.Second, o.LoadTime)

	o, err = parse([]string{"-m", "x.gguf", "--ctx-size", "512", "--parallel", "2", "--tensor-split", "1/1", "--n-gpu-layers", "10"})
	require.NoError(t, err)
	require.Equal(t, 512, o.CtxSize)
	require.Equal(t, 2, o.Parallel)
	require.Equal(t, 10, o.GPULayers)
	require.Equal(t, []float64{1, 1}, o.TensorSplit)
}

func TestUnknownFlagAndMissingModelFail(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"--bogus"}, &out))
	require.Contains(t, out.String(), "invalid argument")
	out.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"--port", "0"}, &out))
	out.Reset()
	require.Equal(t, 1, run(context.Background(), nil, &out), "no model")
	require.Contains(t, out.String(), "--model is required")
}
