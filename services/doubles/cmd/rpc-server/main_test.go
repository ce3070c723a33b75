package main

import (
	"bytes"
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

func TestParseRealServerFlags(t *testing.T) {
	opts, endpoint, err := parse([]string{"-H", "127.0.0.1", "--port", "50100", "-m", "2048,1024", "-t", "1", "-c"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:50100", endpoint)
	require.Equal(t, []rpcserver.DeviceMemory{{Free: 2048 << 20, Total: 2048 << 20}, {Free: 1024 << 20, Total: 1024 << 20}}, opts.Devices)
	require.True(t, opts.CrashOnBrokenPipe, "dies like the real server by default")
}

func TestParseDoubleFlags(t *testing.T) {
	opts, _, err := parse([]string{"-m", "1024", "--free", "512/256", "--devices", "3",
		"--protocol-version", "6.0.0", "--concurrent", "--crash-on-broken-pipe=false"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []rpcserver.DeviceMemory{
		{Free: 512 << 20, Total: 1024 << 20}, {Free: 256 << 20, Total: 1024 << 20}, {Free: 256 << 20, Total: 1024 << 20},
	}, opts.Devices)
	require.Equal(t, ggmlrpc.Version{Major: 6}, opts.ProtocolVersion)
	require.True(t, opts.Concurrent)
	require.False(t, opts.CrashOnBrokenPipe)
}

func TestParseRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-p", "0"}, {"-H", "localhost"}, {"-m", "x"}, {"--protocol-version", "7"}, {"extra"}, {"--bogus"},
	} {
		_, _, err := parse(args, &bytes.Buffer{})
		require.Error(t, err, args)
	}
	_, _, err := parse([]string{"-h"}, &bytes.Buffer{})
	require.ErrorIs(t, err, flag.ErrHelp)
}
