package ggmlrpc_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

func TestWriteCommandFraming(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, ggmlrpc.WriteCommand(&b, ggmlrpc.CmdGetDeviceMemory, ggmlrpc.EncodeUint32(2)))
	require.Equal(t, []byte{11, 4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0}, b.Bytes())

	cmd, size, err := ggmlrpc.ReadCommandHeader(&b)
	require.NoError(t, err)
	require.Equal(t, ggmlrpc.CmdGetDeviceMemory, cmd)
	require.EqualValues(t, 4, size)
}

func TestResponseFraming(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, ggmlrpc.WriteResponse(&b, ggmlrpc.EncodeDeviceMemory(7, 9)))
	require.Equal(t, 8+16, b.Len())
	p, err := ggmlrpc.ReadResponse(&b, ggmlrpc.DeviceMemoryRespSize)
	require.NoError(t, err)
	free, total, err := ggmlrpc.DecodeDeviceMemory(p)
	require.NoError(t, err)
	require.Equal(t, [2]uint64{7, 9}, [2]uint64{free, total})

	b.Reset()
	require.NoError(t, ggmlrpc.WriteResponse(&b, []byte{1, 2, 3}))
	_, err = ggmlrpc.ReadResponse(&b, 4)
	var se *ggmlrpc.SizeError
	require.ErrorAs(t, err, &se)
	require.Equal(t, ggmlrpc.SizeError{Got: 3, Want: 4}, *se)
}

func TestReadPayloadRefusesBeforeAllocating(t *testing.T) {
	_, err := ggmlrpc.ReadPayload(bytes.NewReader(nil), 1<<60, 1<<20)
	require.ErrorIs(t, err, ggmlrpc.ErrFrameTooLarge)

	_, err = ggmlrpc.ReadPayload(bytes.NewReader([]byte{1}), 2, 2)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestHelloLayouts(t *testing.T) {
	require.Len(t, ggmlrpc.EncodeHelloRequest(), 24)
	modern := ggmlrpc.EncodeHelloResponse(ggmlrpc.Version{Major: 5, Minor: 1, Patch: 2})
	require.Len(t, modern, 28)
	require.Equal(t, []byte{5, 1, 2, 0}, modern[:4])
	legacy := ggmlrpc.EncodeHelloResponse(ggmlrpc.Version{Major: 3, Minor: 6, Patch: 1})
	require.Equal(t, []byte{3, 6, 1}, legacy)
	for _, b := range [][]byte{modern, legacy} {
		_, err := ggmlrpc.DecodeHelloResponse(b)
		require.NoError(t, err)
	}
	_, err := ggmlrpc.DecodeHelloResponse(make([]byte, 5))
	require.Error(t, err)
}

func TestLayouts(t *testing.T) {
	for cmd := ggmlrpc.Command(0); cmd < ggmlrpc.CmdCount; cmd++ {
		_, ok := ggmlrpc.LayoutOf(cmd)
		require.True(t, ok, cmd.String())
	}
	_, ok := ggmlrpc.LayoutOf(ggmlrpc.CmdCount)
	require.False(t, ok)
	require.Equal(t, "HELLO", ggmlrpc.CmdHello.String())
	require.EqualValues(t, 14, ggmlrpc.CmdHello)

	l, _ := ggmlrpc.LayoutOf(ggmlrpc.CmdSetTensor)
	require.False(t, l.HasResponse, "SET_TENSOR is not answered")
	l, _ = ggmlrpc.LayoutOf(ggmlrpc.CmdFreeBuffer)
	require.True(t, l.HasResponse)
	require.Zero(t, l.ResponseSize, "FREE_BUFFER is answered with an empty payload")
}

func TestTensorRoundTrip(t *testing.T) {
	in := ggmlrpc.Tensor{ID: 1, Type: 1, Buffer: 2, Ne: [4]uint32{3, 4, 1, 1}, Nb: [4]uint32{2, 6, 24, 24}, Data: 99, UseCount: -1}
	in.SetName("blk.0.attn_q.weight")
	b, err := in.AppendBinary(nil)
	require.NoError(t, err)
	require.Len(t, b, ggmlrpc.TensorSize)
	out, err := ggmlrpc.DecodeTensor(b)
	require.NoError(t, err)
	require.Equal(t, in, out)
	require.Equal(t, "blk.0.attn_q.weight", out.NameString())
}

func TestVersion(t *testing.T) {
	v, err := ggmlrpc.ParseVersion("5.1.0")
	require.NoError(t, err)
	require.Equal(t, ggmlrpc.Version{Major: 5, Minor: 1}, v)
	v, err = ggmlrpc.ParseVersion("v6.2")
	require.NoError(t, err)
	require.Equal(t, "6.2.0", v.String())
	for _, bad := range []string{"", "5", "5.x.0", "256.0.0", "1.2.3.4"} {
		_, err := ggmlrpc.ParseVersion(bad)
		require.Error(t, err, bad)
	}
}
