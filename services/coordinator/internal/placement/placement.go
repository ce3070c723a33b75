package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	gguf "github.com/gpustack/gguf-parser-go"
)

// Backend is an rpc-server that can take a share of a model.
type Backend struct {
	// Address is host:port, as passed to --rpc.
	Address string
	// Free is each device's free memory in bytes, in the server's device order (llama-server
	// adds them as RPC<n> devices in this order).
	Free []uint64
}

// FreeTotal is the sum over the backend's devices.
func (b Backend) FreeTotal() uint64 {
	var n uint64
	for _, f := range b.Free {
		n += f
	}
	return n
}

// Request is what the coordinator will be started with.
type Request struct {
	// Context is the whole context (-c), shared by the slots.
	Context uint32
	// Parallel is the number of slots (-np).
	Parallel uint32
}

// Placement is a chosen set of backends for a model.
type Placement struct {
	// Backends are the rpc-servers, in --rpc order.
	Backends []string
	// Split is the share of the layers per device (--tensor-split), in device order (the
	// devices of Backends[0], then of Backends[1], …). It sums to 1.
	Split []float32
	// DeviceNeed is the estimated memory per device, same order as Split.
	DeviceNeed []uint64
	// Total is the estimated memory over all devices: weights, KV cache and compute buffers.
	Total uint64
	Request
}

// NoFitError says the model does not fit, with the figures.
type NoFitError struct {
	Model     string
	Needed    uint64 // estimated bytes over the candidate devices (or one device if none)
	Available uint64 // free bytes over the candidates
	Backends  []Backend
	Request
}

func (e *NoFitError) Error() string {
	if len(e.Backends) == 0 {
		return fmt.Sprintf("model %s needs about %s (context %d over %d slots) and no rpc backend is available",
			e.Model, Bytes(e.Needed), e.Context, e.Parallel)
	}
	var parts []string
	for _, b := range e.Backends {
		parts = append(parts, fmt.Sprintf("%s %s free", b.Address, Bytes(b.FreeTotal())))
	}
	return fmt.Sprintf("model %s needs about %s (context %d over %d slots) but the %d available rpc backends have %s free (%s), and no subset gives every device its share",
		e.Model, Bytes(e.Needed), e.Context, e.Parallel, len(e.Backends), Bytes(e.Available), strings.Join(parts, ", "))
}

// Need estimates the memory of the model on a single device with every layer offloaded.
func Need(m *Model, req Request) uint64 {
	est := estimate(m, req, nil, nil)
	if len(est) == 0 {
		return uint64(m.FileSize)
	}
	return est[0]
}

// Profile describes the model's memory need as a line in the context size: base bytes plus
// bytes per context token (the KV cache), from two estimates on one device with every layer
// offloaded. Callers without the file (the router) size any context with it.
// It is computed once per model.
func Profile(m *Model) (base, perToken uint64) {
	m.profileOnce.Do(func() {
		const lo, hi = 1024, 9216
		a, b := Need(m, Request{Context: lo, Parallel: 1}), Need(m, Request{Context: hi, Parallel: 1})
		if b <= a {
			m.base = a
			return
		}
		m.perToken = (b - a) / (hi - lo)
		m.base = a - min(a, m.perToken*lo)
	})
	return m.base, m.perToken
}

// Plan chooses the fewest backends, most free memory first, on which every device fits its
// share of the model with the split in proportion to free memory. It returns *NoFitError
// when even all candidates together cannot hold it.
func Plan(m *Model, req Request, candidates []Backend) (*Placement, error) {
	cands := slices.Clone(candidates)
	slices.SortStableFunc(cands, func(a, b Backend) int {
		if c := cmp.Compare(b.FreeTotal(), a.FreeTotal()); c != 0 {
			return c
		}
		return strings.Compare(a.Address, b.Address)
	})
	noFit := &NoFitError{Model: m.Path, Backends: cands, Request: req, Needed: Need(m, req)}
	for _, c := range cands {
		noFit.Available += c.FreeTotal()
	}
	for k := 1; k <= len(cands); k++ {
		chosen := cands[:k]
		var addrs []string
		var free []uint64
		for _, b := range chosen {
			for range b.Free {
				addrs = append(addrs, b.Address)
			}
			free = append(free, b.Free...)
		}
		split := proportional(free)
		if split == nil {
			continue
		}
		need := estimate(m, req, addrs, split)
		if len(need) != len(free) {
			continue
		}
		var total uint64
		fits := true
		for i := range need {
			total += need[i]
			if need[i] > free[i] {
				fits = false
			}
		}
		if k == len(cands) {
			noFit.Needed = total
		}
		if !fits {
			continue
		}
		p := &Placement{Split: split, DeviceNeed: need, Total: total, Request: req}
		for _, b := range chosen {
			p.Backends = append(p.Backends, b.Address)
		}
		return p, nil
	}
	return nil, noFit
}

// proportional is each share of the total; nil when nothing is free.
func proportional(free []uint64) []float32 {
	var sum float64
	for _, f := range free {
		sum += float64(f)
	}
	if sum == 0 {
		return nil
	}
	out := make([]float32, len(free))
	for i, f := range free {
		out[i] = float32(float64(f) / sum)
	}
	return out
}

// estimate returns the memory per remote device (weights, KV cache, compute buffers and
// footprint) for the given devices and split; with no devices, one local GPU.
func estimate(m *Model, req Request, devices []string, split []float32) (out []uint64) {
	defer func() {
		if recover() != nil {
			out = nil
		}
	}()
	opts := []gguf.GGUFRunEstimateOption{
		gguf.WithLLaMACppContextSize(int32(req.Context)),
		gguf.WithParallelSize(int32(max(req.Parallel, 1))),
		gguf.WithLLaMACppOffloadLayers(m.Layers + 1),
	}
	if len(devices) > 0 {
		cum := make([]float64, len(split))
		var acc float64
		for i, s := range split {
			acc += float64(s)
			cum[i] = acc
		}
		cum[len(cum)-1] = 1
		opts = append(opts, gguf.WithRPCServers(devices), gguf.WithTensorSplitFraction(cum))
	}
	est := m.file.EstimateLLaMACppRun(opts...)
	for _, d := range est.Devices[1:] {
		out = append(out, uint64(d.Footprint)+uint64(d.Weight.Sum())+uint64(d.KVCache.Sum())+uint64(d.Computation.Sum()))
	}
	return out
}

// Bytes formats a byte count for people: "1.5 GiB", "300 MiB", "12 KiB".
func Bytes(n uint64) string {
	const k = 1024
	switch {
	case n >= k*k*k:
		return fmt.Sprintf("%.1f GiB", float64(n)/(k*k*k))
	case n >= k*k:
		return fmt.Sprintf("%.1f MiB", float64(n)/(k*k))
	case n >= k:
		return fmt.Sprintf("%.0f KiB", float64(n)/k)
	}
	return fmt.Sprintf("%d B", n)
}
