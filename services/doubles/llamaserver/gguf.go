package llamaserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// modelInfo is what the double needs from a GGUF file: enough to print the load lines
// llama.cpp prints and to size the context and the weights per device.
type modelInfo struct {
	path         string
	fileSize     int64
	version      uint32
	tensorCount  uint64
	kvCount      uint64
	architecture string
	name         string
	contextLen   uint64 // <arch>.context_length (n_ctx_train); 0 when absent
	blockCount   uint64 // <arch>.block_count (n_layer)
}

// GGUF metadata value types (gguf_type).
const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

var errNotGGUF = errors.New("invalid magic characters")

// readModelInfo reads a GGUF file's header and metadata; it does not read tensor data. It
// is a small independent reader, enough for the double: the coordinator sizes models with
// gguf-parser-go.
func readModelInfo(path string) (*modelInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	r := &ggufReader{r: bufio.NewReaderSize(f, 64<<10)}
	m := &modelInfo{path: path, fileSize: st.Size()}
	var magic [4]byte
	if _, err := io.ReadFull(r.r, magic[:]); err != nil || string(magic[:]) != "GGUF" {
		return nil, errNotGGUF
	}
	m.version = r.u32()
	m.tensorCount = r.u64()
	m.kvCount = r.u64()
	if r.err != nil {
		return nil, r.err
	}
	if m.version < 2 || m.kvCount > 1<<20 {
		return nil, fmt.Errorf("unsupported GGUF version %d", m.version)
	}
	ints := map[string]uint64{}
	for i := uint64(0); i < m.kvCount && r.err == nil; i++ {
		key := r.str()
		typ := r.u32()
		switch {
		case typ == ggufString:
			v := r.str()
			switch key {
			case "general.architecture":
				m.architecture = v
			case "general.name":
				m.name = v
			}
		case typ == ggufUint32 || typ == ggufInt32:
			ints[key] = uint64(r.u32())
		case typ == ggufUint64 || typ == ggufInt64:
			ints[key] = r.u64()
		default:
			r.skipValue(typ)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("reading metadata: %w", r.err)
	}
	m.contextLen = ints[m.architecture+".context_length"]
	m.blockCount = ints[m.architecture+".block_count"]
	return m, nil
}

// ggufReader reads little-endian GGUF values and remembers the first error.
type ggufReader struct {
	r   *bufio.Reader
	err error
	buf [8]byte
}

func (g *ggufReader) read(n int) []byte {
	if g.err != nil {
		return g.buf[:n]
	}
	if _, err := io.ReadFull(g.r, g.buf[:n]); err != nil {
		g.err = err
	}
	return g.buf[:n]
}

func (g *ggufReader) u32() uint32 { return binary.LittleEndian.Uint32(g.read(4)) }
func (g *ggufReader) u64() uint64 { return binary.LittleEndian.Uint64(g.read(8)) }

func (g *ggufReader) str() string {
	n := g.u64()
	if g.err != nil {
		return ""
	}
	if n > 1<<24 {
		g.err = fmt.Errorf("string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(g.r, b); err != nil {
		g.err = err
	}
	return string(b)
}

func (g *ggufReader) skip(n uint64) {
	if g.err != nil {
		return
	}
	if _, err := g.r.Discard(int(n)); err != nil {
		g.err = err
	}
}

// skipValue skips one value of type typ (arrays of strings included).
func (g *ggufReader) skipValue(typ uint32) {
	switch typ {
	case ggufUint8, ggufInt8, ggufBool:
		g.skip(1)
	case ggufUint16, ggufInt16:
		g.skip(2)
	case ggufUint32, ggufInt32, ggufFloat32:
		g.skip(4)
	case ggufUint64, ggufInt64, ggufFloat64:
		g.skip(8)
	case ggufString:
		g.skip(g.u64())
	case ggufArray:
		elem := g.u32()
		n := g.u64()
		if elem == ggufString {
			for i := uint64(0); i < n && g.err == nil; i++ {
				g.skip(g.u64())
			}
			return
		}
		size := map[uint32]uint64{ggufUint8: 1, ggufInt8: 1, ggufBool: 1, ggufUint16: 2, ggufInt16: 2,
			ggufUint32: 4, ggufInt32: 4, ggufFloat32: 4, ggufUint64: 8, ggufInt64: 8, ggufFloat64: 8}[elem]
		if size == 0 {
			g.err = fmt.Errorf("array of unknown type %d", elem)
			return
		}
		g.skip(n * size)
	default:
		if g.err == nil {
			g.err = fmt.Errorf("unknown metadata type %d", typ)
		}
	}
}
