package ggmlrpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

var le = binary.LittleEndian

// ErrFrameTooLarge is returned by the read helpers when a peer announces a payload larger than
// the caller's limit. Nothing is allocated for it.
var ErrFrameTooLarge = errors.New("ggmlrpc: announced payload exceeds limit")

// SizeError reports a response whose announced payload size is not the one the command has.
type SizeError struct {
	Got  uint64
	Want int
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("ggmlrpc: response payload is %d bytes, want %d", e.Got, e.Want)
}

// WriteCommand writes one request: the command byte, the payload size and the payload, in a
// single Write so a request is never split by the caller's own writes.
func WriteCommand(w io.Writer, cmd Command, payload []byte) error {
	buf := make([]byte, 9, 9+len(payload))
	buf[0] = byte(cmd)
	le.PutUint64(buf[1:], uint64(len(payload)))
	buf = append(buf, payload...)
	_, err := w.Write(buf)
	return err
}

// ReadCommandHeader reads the command byte and the announced payload size of one request. The
// caller decides from the command's Layout whether to read the payload (ReadPayload) or to
// close the connection, as the real server does on a size it does not expect.
func ReadCommandHeader(r io.Reader) (Command, uint64, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return 0, 0, err
	}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return 0, 0, noEOF(err)
	}
	return Command(hdr[0]), le.Uint64(hdr[1:]), nil
}

// ReadPayload reads size bytes, refusing (ErrFrameTooLarge) before allocating when size is
// above limit.
func ReadPayload(r io.Reader, size, limit uint64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, size, limit)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// WriteResponse writes one response: the payload size and the payload, in a single Write.
func WriteResponse(w io.Writer, payload []byte) error {
	buf := make([]byte, 8, 8+len(payload))
	le.PutUint64(buf, uint64(len(payload)))
	buf = append(buf, payload...)
	_, err := w.Write(buf)
	return err
}

// ReadResponseSize reads the 8-byte payload size that starts every response.
func ReadResponseSize(r io.Reader) (uint64, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	return le.Uint64(hdr[:]), nil
}

// ReadResponse reads one response whose payload must be exactly want bytes, as the real
// client requires. Any other announced size is a *SizeError and nothing more is read.
func ReadResponse(r io.Reader, want int) ([]byte, error) {
	size, err := ReadResponseSize(r)
	if err != nil {
		return nil, err
	}
	if size != uint64(want) {
		return nil, &SizeError{Got: size, Want: want}
	}
	return ReadPayload(r, size, uint64(want))
}

// ReadResponseLimit reads one response of variable size up to limit bytes (GET_TENSOR).
func ReadResponseLimit(r io.Reader, limit uint64) ([]byte, error) {
	size, err := ReadResponseSize(r)
	if err != nil {
		return nil, err
	}
	return ReadPayload(r, size, limit)
}

// noEOF turns an EOF in the middle of a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// EncodeHelloRequest returns the HELLO request payload of protocol 4.0.0 and later: 24 bytes of
// connection capabilities, all zero because this package offers only plain TCP.
func EncodeHelloRequest() []byte { return make([]byte, HelloRequestSize) }

// EncodeHelloResponse returns the HELLO response payload for a server of version v: the
// 28-byte layout with zero capabilities for 4.0.0 and later, the 3-byte one before.
func EncodeHelloResponse(v Version) []byte {
	if !v.HasConnCaps() {
		return []byte{v.Major, v.Minor, v.Patch}
	}
	b := make([]byte, HelloResponseSize)
	b[0], b[1], b[2] = v.Major, v.Minor, v.Patch
	return b
}

// DecodeHelloResponse reads the version from a HELLO response payload of either layout.
func DecodeHelloResponse(b []byte) (Version, error) {
	if len(b) != HelloResponseSize && len(b) != LegacyHelloResponseSize {
		return Version{}, fmt.Errorf("ggmlrpc: HELLO response of %d bytes", len(b))
	}
	return Version{Major: b[0], Minor: b[1], Patch: b[2]}, nil
}

// EncodeUint32 returns v as 4 little-endian bytes (a device index request).
func EncodeUint32(v uint32) []byte { return le.AppendUint32(nil, v) }

// EncodeUint64 returns v as 8 little-endian bytes.
func EncodeUint64(v uint64) []byte { return le.AppendUint64(nil, v) }

// DecodeUint32 reads a 4-byte little-endian payload.
func DecodeUint32(b []byte) (uint32, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("ggmlrpc: want 4 bytes, got %d", len(b))
	}
	return le.Uint32(b), nil
}

// DecodeUint64 reads an 8-byte little-endian payload.
func DecodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("ggmlrpc: want 8 bytes, got %d", len(b))
	}
	return le.Uint64(b), nil
}

// EncodeDeviceMemory returns a GET_DEVICE_MEMORY response payload.
func EncodeDeviceMemory(free, total uint64) []byte {
	return le.AppendUint64(le.AppendUint64(nil, free), total)
}

// DecodeDeviceMemory reads a GET_DEVICE_MEMORY response payload.
func DecodeDeviceMemory(b []byte) (free, total uint64, err error) {
	if len(b) != DeviceMemoryRespSize {
		return 0, 0, fmt.Errorf("ggmlrpc: device memory response of %d bytes", len(b))
	}
	return le.Uint64(b), le.Uint64(b[8:]), nil
}
