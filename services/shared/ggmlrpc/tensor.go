package ggmlrpc

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Tensor is a serialized ggml tensor (struct rpc_tensor), 296 bytes on the wire. Buffer is the
// server's handle of the buffer holding the data (ALLOC_BUFFER's remote pointer) and Data the
// absolute server address of the first byte, inside [base, base+size) of that buffer. ID and
// Src/ViewSrc are the client's own tensor addresses, used only to link graph nodes.
type Tensor struct {
	ID       uint64
	Type     uint32
	Buffer   uint64
	Ne       [MaxDims]uint32 // elements per dimension
	Nb       [MaxDims]uint32 // stride in bytes per dimension
	Op       uint32
	OpParams [MaxOpParams / 4]int32
	Flags    int32
	Src      [MaxSrc]uint64
	ViewSrc  uint64
	ViewOffs uint64
	Data     uint64
	Name     [MaxName]byte
	UseCount int32
}

func init() {
	if n := binary.Size(Tensor{}); n != TensorSize {
		panic(fmt.Sprintf("ggmlrpc: Tensor encodes to %d bytes, want %d", n, TensorSize))
	}
}

// AppendBinary appends the wire form of t to b.
func (t *Tensor) AppendBinary(b []byte) ([]byte, error) {
	return binary.Append(b, le, t)
}

// DecodeTensor reads a tensor from the first TensorSize bytes of b.
func DecodeTensor(b []byte) (Tensor, error) {
	var t Tensor
	if len(b) < TensorSize {
		return t, fmt.Errorf("ggmlrpc: tensor needs %d bytes, got %d", TensorSize, len(b))
	}
	if _, err := binary.Decode(b[:TensorSize], le, &t); err != nil {
		return t, fmt.Errorf("ggmlrpc: decode tensor: %w", err)
	}
	return t, nil
}

// SetName stores name (truncated to MaxName-1 bytes) NUL-terminated.
func (t *Tensor) SetName(name string) {
	t.Name = [MaxName]byte{}
	copy(t.Name[:MaxName-1], name)
}

// NameString returns the name up to its first NUL.
func (t *Tensor) NameString() string {
	if i := bytes.IndexByte(t.Name[:], 0); i >= 0 {
		return string(t.Name[:i])
	}
	return string(t.Name[:])
}
