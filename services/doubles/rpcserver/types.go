package rpcserver

import "github.com/sollol/mesh/services/shared/ggmlrpc"

// typeTraits is the block size (elements per block) and block size in bytes of each ggml
// tensor type id, as of the llama.cpp commit named in package ggmlrpc. Removed ids have a zero
// block size, which the real server rejects as an invalid type.
var typeTraits = [...]struct{ blck, size uint64 }{
	0: {1, 4}, 1: {1, 2}, 2: {32, 18}, 3: {32, 20}, 6: {32, 22}, 7: {32, 24}, 8: {32, 34},
	9: {32, 36}, 10: {256, 84}, 11: {256, 110}, 12: {256, 144}, 13: {256, 176},
	14: {256, 210}, 15: {256, 292}, 16: {256, 66}, 17: {256, 74}, 18: {256, 98},
	19: {256, 50}, 20: {32, 18}, 21: {256, 110}, 22: {256, 82}, 23: {256, 136}, 24: {1, 1},
	25: {1, 2}, 26: {1, 4}, 27: {1, 8}, 28: {1, 8}, 29: {256, 56}, 30: {1, 2},
	34: {256, 54}, 35: {256, 66}, 39: {32, 17}, 40: {64, 36}, 41: {128, 18}, 42: {64, 18},
}

// validType reports whether the real server would accept t's type (a known id with a
// non-zero block size).
func validType(t *ggmlrpc.Tensor) bool {
	return int(t.Type) < len(typeTraits) && typeTraits[t.Type].blck != 0
}

// nbytes is ggml_nbytes: the span in bytes from a tensor's first to just past its last
// element, given its strides. t must have a valid type.
func nbytes(t *ggmlrpc.Tensor) uint64 {
	for _, ne := range t.Ne {
		if ne == 0 {
			return 0
		}
	}
	tr := typeTraits[t.Type]
	var n uint64
	first := 0
	if tr.blck == 1 {
		n = tr.size
	} else {
		n = uint64(t.Ne[0]) * uint64(t.Nb[0]) / tr.blck
		first = 1
	}
	for i := first; i < ggmlrpc.MaxDims; i++ {
		n += uint64(t.Ne[i]-1) * uint64(t.Nb[i])
	}
	return n
}
