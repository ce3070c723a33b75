package ggmlrpc

import (
	"fmt"
	"strconv"
	"strings"
)

// ProtocolVersion is the RPC protocol version this package speaks (RPC_PROTO_*_VERSION of the
// llama.cpp commit named in the package documentation).
var ProtocolVersion = Version{Major: 5, Minor: 1, Patch: 0}

// Version is an RPC protocol version as HELLO reports it.
type Version struct {
	Major, Minor, Patch uint8
}

// String formats v as "major.minor.patch".
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// IsZero reports whether v is the zero Version.
func (v Version) IsZero() bool { return v == Version{} }

// Accepts reports whether a client speaking v can use a server that reports server. It is
// llama-server's own rule: the major versions must be equal and the server's minor version
// must not be newer than the client's. The patch level is not compared.
func (v Version) Accepts(server Version) bool {
	return server.Major == v.Major && server.Minor <= v.Minor
}

// HasConnCaps reports whether a server of version v uses the HELLO layout with connection
// capabilities (protocol 4.0.0 and later) rather than the empty request and 3-byte response
// of versions 1–3.
func (v Version) HasConnCaps() bool { return v.Major >= 4 }

// ParseVersion parses "major.minor.patch" (or "major.minor", patch 0).
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(strings.TrimPrefix(strings.TrimSpace(s), "v"), ".")
	if len(parts) < 2 || len(parts) > 3 {
		return Version{}, fmt.Errorf("ggmlrpc: version %q is not major.minor.patch", s)
	}
	var n [3]uint8
	for i, p := range parts {
		x, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return Version{}, fmt.Errorf("ggmlrpc: version %q: %w", s, err)
		}
		n[i] = uint8(x)
	}
	return Version{Major: n[0], Minor: n[1], Patch: n[2]}, nil
}

// Command is the first byte of every request (enum rpc_cmd). The numbering is part of the
// protocol: HELLO is 14 in every version that has it.
type Command uint8

// Commands of protocol 5.1.0.
const (
	CmdAllocBuffer     Command = 0
	CmdGetAlignment    Command = 1
	CmdGetMaxSize      Command = 2
	CmdBufferGetBase   Command = 3
	CmdFreeBuffer      Command = 4
	CmdBufferClear     Command = 5
	CmdSetTensor       Command = 6
	CmdSetTensorHash   Command = 7
	CmdGetTensor       Command = 8
	CmdCopyTensor      Command = 9
	CmdGraphCompute    Command = 10
	CmdGetDeviceMemory Command = 11
	CmdInitTensor      Command = 12
	CmdGetAllocSize    Command = 13
	CmdHello           Command = 14
	CmdDeviceCount     Command = 15
	CmdGraphRecompute  Command = 16
	CmdMemsetTensor    Command = 17
	// CmdCount is the number of commands; the server closes the connection on any id at or
	// above it.
	CmdCount Command = 18
)

var commandNames = [...]string{
	"ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "FREE_BUFFER",
	"BUFFER_CLEAR", "SET_TENSOR", "SET_TENSOR_HASH", "GET_TENSOR", "COPY_TENSOR",
	"GRAPH_COMPUTE", "GET_DEVICE_MEMORY", "INIT_TENSOR", "GET_ALLOC_SIZE", "HELLO",
	"DEVICE_COUNT", "GRAPH_RECOMPUTE", "MEMSET_TENSOR",
}

// String returns the command's name without the RPC_CMD_ prefix.
func (c Command) String() string {
	if int(c) < len(commandNames) {
		return commandNames[c]
	}
	return fmt.Sprintf("Command(%d)", uint8(c))
}

// Sizes of the fixed parts of the protocol, in bytes.
const (
	ConnCapsSize            = 24                // transport capabilities in HELLO
	HelloRequestSize        = ConnCapsSize      // since 4.0.0
	HelloResponseSize       = 4 + ConnCapsSize  // major, minor, patch, padding, capabilities
	LegacyHelloResponseSize = 3                 // versions 1–3: major, minor, patch
	DeviceRequestSize       = 4                 // uint32 device index
	DeviceCountResponseSize = 4                 // uint32
	DeviceMemoryRespSize    = 16                // free, total uint64
	TensorSize              = 296               // a serialized tensor (rpc_tensor)
	MaxDims                 = 4                 // GGML_MAX_DIMS
	MaxSrc                  = 10                // GGML_MAX_SRC
	MaxOpParams             = 64                // GGML_MAX_OP_PARAMS, in bytes
	MaxName                 = 64                // GGML_MAX_NAME
	SetTensorHeaderSize     = TensorSize + 8    // SET_TENSOR: tensor, offset, then the data
	GetAllocSizeRequestSize = 4 + TensorSize*11 // device, tensor, sources
)

// VariableSize marks a request or response payload whose size is not fixed.
const VariableSize = -1

// Layout is the framing of one command: the payload size of its request and whether and how
// large a response the server sends.
type Layout struct {
	// RequestSize is the exact request payload size, or VariableSize.
	RequestSize int
	// HasResponse is false for commands the server does not answer at all.
	HasResponse bool
	// ResponseSize is the exact response payload size (0 for an empty response), or
	// VariableSize; meaningful only when HasResponse.
	ResponseSize int
}

var layouts = [CmdCount]Layout{
	CmdAllocBuffer:     {RequestSize: 12, HasResponse: true, ResponseSize: 16},
	CmdGetAlignment:    {RequestSize: DeviceRequestSize, HasResponse: true, ResponseSize: 8},
	CmdGetMaxSize:      {RequestSize: DeviceRequestSize, HasResponse: true, ResponseSize: 8},
	CmdBufferGetBase:   {RequestSize: 8, HasResponse: true, ResponseSize: 8},
	CmdFreeBuffer:      {RequestSize: 8, HasResponse: true, ResponseSize: 0},
	CmdBufferClear:     {RequestSize: 9, HasResponse: true, ResponseSize: 0},
	CmdSetTensor:       {RequestSize: VariableSize},
	CmdSetTensorHash:   {RequestSize: TensorSize + 16, HasResponse: true, ResponseSize: 1},
	CmdGetTensor:       {RequestSize: TensorSize + 16, HasResponse: true, ResponseSize: VariableSize},
	CmdCopyTensor:      {RequestSize: 2 * TensorSize, HasResponse: true, ResponseSize: 1},
	CmdGraphCompute:    {RequestSize: VariableSize},
	CmdGetDeviceMemory: {RequestSize: DeviceRequestSize, HasResponse: true, ResponseSize: DeviceMemoryRespSize},
	CmdInitTensor:      {RequestSize: TensorSize, HasResponse: true, ResponseSize: 0},
	CmdGetAllocSize:    {RequestSize: GetAllocSizeRequestSize, HasResponse: true, ResponseSize: 8},
	CmdHello:           {RequestSize: HelloRequestSize, HasResponse: true, ResponseSize: HelloResponseSize},
	CmdDeviceCount:     {RequestSize: 0, HasResponse: true, ResponseSize: DeviceCountResponseSize},
	CmdGraphRecompute:  {RequestSize: DeviceRequestSize},
	CmdMemsetTensor:    {RequestSize: TensorSize + 17, HasResponse: true, ResponseSize: 0},
}

// LayoutOf returns the framing of cmd in protocol 5.x, and false for an unknown command.
func LayoutOf(cmd Command) (Layout, bool) {
	if cmd >= CmdCount {
		return Layout{}, false
	}
	return layouts[cmd], true
}
