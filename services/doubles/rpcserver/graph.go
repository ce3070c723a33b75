package rpcserver

import "github.com/sollol/mesh/services/shared/ggmlrpc"

// graphCompute checks a GRAPH_COMPUTE request the way the real server does before computing —
// | device u32 | n_nodes u32 | node ids u64 × n_nodes | n_tensors u32 | tensors × n_tensors | —
// and that every non-zero node id, and every source and view source it refers to, is among
// the tensors and deserializes. It computes nothing: this command is a stub.
func (ss *session) graphCompute(p []byte) bool {
	if len(p) < 8 {
		return false
	}
	dev := le.Uint32(p)
	if int(dev) >= len(ss.s.devices) {
		return false
	}
	nNodes := uint64(le.Uint32(p[4:]))
	n := uint64(len(p))
	if n < 8+nNodes*8+4 {
		return false
	}
	nodes := p[8 : 8+nNodes*8]
	rest := p[8+nNodes*8:]
	nTensors := uint64(le.Uint32(rest))
	if n < 8+nNodes*8+4+nTensors*ggmlrpc.TensorSize {
		return false
	}
	tensors := make(map[uint64]*ggmlrpc.Tensor, nTensors)
	for i := range nTensors {
		t, err := ggmlrpc.DecodeTensor(rest[4+i*ggmlrpc.TensorSize:])
		if err != nil {
			return false
		}
		if _, dup := tensors[t.ID]; !dup { // the first of equal ids wins, as in the real server
			tensors[t.ID] = &t
		}
	}
	seen := make(map[uint64]bool, nNodes)
	for i := range nNodes {
		id := le.Uint64(nodes[i*8:])
		if id != 0 && !ss.node(id, tensors, seen) {
			ss.logf("[graph_compute] failed to create graph node %d (id=%d)", i, id)
			return false
		}
	}
	ss.graphs[dev] = true
	return true
}

// node checks that tensor id and everything it refers to can be built, like create_node.
func (ss *session) node(id uint64, tensors map[uint64]*ggmlrpc.Tensor, seen map[uint64]bool) bool {
	if seen[id] {
		return true
	}
	t, ok := tensors[id]
	if !ok {
		return false
	}
	b, ok := ss.deserialize(t)
	if !ok || (b == nil && t.Data != 0) {
		return false
	}
	seen[id] = true
	for _, src := range t.Src {
		if src != 0 && !ss.node(src, tensors, seen) {
			return false
		}
	}
	return t.ViewSrc == 0 || ss.node(t.ViewSrc, tensors, seen)
}
