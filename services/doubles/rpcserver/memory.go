package rpcserver

const pageSize = 64 << 10

// buffer is one allocated device buffer. Its bytes live in sparse pages, created on first
// write, so a client may allocate gigabytes (as llama-server does for the KV cache) and the
// double holds only what was written. Bytes never written read as the last clear value.
type buffer struct {
	device int
	handle uint64 // the "remote pointer" the client names the buffer by
	base   uint64 // the fake address of the first byte
	size   uint64
	fill   byte
	pages  map[uint64][]byte
}

func newBuffer(device int, handle, base, size uint64) *buffer {
	return &buffer{device: device, handle: handle, base: base, size: size, pages: map[uint64][]byte{}}
}

// contains reports whether [addr, addr+n) lies inside the buffer.
func (b *buffer) contains(addr, n uint64) bool {
	if addr < b.base {
		return false
	}
	off := addr - b.base
	return off <= b.size && n <= b.size-off
}

// clear sets every byte to v, as ggml_backend_buffer_clear does.
func (b *buffer) clear(v byte) {
	b.fill = v
	clear(b.pages)
}

func (b *buffer) page(i uint64) []byte {
	p, ok := b.pages[i]
	if !ok {
		p = make([]byte, pageSize)
		if b.fill != 0 {
			for j := range p {
				p[j] = b.fill
			}
		}
		b.pages[i] = p
	}
	return p
}

// write copies data to offset off; the caller has checked the bounds.
func (b *buffer) write(off uint64, data []byte) {
	for len(data) > 0 {
		p := b.page(off / pageSize)
		n := copy(p[off%pageSize:], data)
		data = data[n:]
		off += uint64(n)
	}
}

// set fills n bytes at offset off with v; the caller has checked the bounds.
func (b *buffer) set(off, n uint64, v byte) {
	for n > 0 {
		p := b.page(off / pageSize)
		chunk := p[off%pageSize:]
		if uint64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		for i := range chunk {
			chunk[i] = v
		}
		n -= uint64(len(chunk))
		off += uint64(len(chunk))
	}
}

// read returns n bytes from offset off; the caller has checked the bounds and the size.
func (b *buffer) read(off, n uint64) []byte {
	out := make([]byte, n)
	for dst := out; len(dst) > 0; {
		var k int
		if p, ok := b.pages[off/pageSize]; ok {
			k = copy(dst, p[off%pageSize:])
		} else {
			k = min(len(dst), int(pageSize-off%pageSize))
			if b.fill != 0 {
				for i := range dst[:k] {
					dst[i] = b.fill
				}
			}
		}
		dst = dst[k:]
		off += uint64(k)
	}
	return out
}
