package probe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

// probeRPC verifies a llama.cpp rpc-server with the ggml-rpc handshake and learns each
// device's memory. An open port that does not answer HELLO correctly fails; a real
// rpc-server speaking another protocol version is incompatible, with both versions recorded,
// because llama-server would abort on it.
func (p *Prober) probeRPC(ctx context.Context, addr string) Result {
	start := time.Now()
	info, err := ggmlrpc.Probe(ctx, addr)
	rtt := time.Since(start)
	var mismatch *ggmlrpc.VersionMismatchError
	switch {
	case errors.As(err, &mismatch):
		return Result{
			Backend: &commonv1.Backend{ProtocolVersion: mismatch.Got.String()},
			RTT:     rtt,
			Outcome: health.Incompatible,
			Err: fmt.Errorf("rpc-server at %s speaks ggml-rpc protocol %s; the mesh speaks %s",
				addr, mismatch.Got, mismatch.Want),
		}
	case errors.Is(err, ggmlrpc.ErrNoReply):
		// Connected but silent: most likely serving a coordinator (an rpc-server takes one
		// client at a time). The probe already gave up with a reset, which the server
		// survives; a clean close would kill it with SIGPIPE when it finally answers.
		return Result{RTT: rtt, Outcome: health.Busy, Err: fmt.Errorf("rpc-server at %s accepted but did not answer: %w", addr, err)}
	case err != nil:
		return failed(fmt.Errorf("rpc-server at %s: %w", addr, err))
	}
	c := &commonv1.Capacity{}
	for _, d := range info.Devices {
		// The protocol carries no device names; llama-server calls them RPC0, RPC1, …
		c.Devices = append(c.Devices, &commonv1.DeviceMemory{
			Name:       "RPC" + strconv.Itoa(d.Index),
			TotalBytes: d.Total,
			FreeBytes:  d.Free,
		})
		c.TotalBytes += d.Total
		c.FreeBytes += d.Free
	}
	return Result{
		Backend: &commonv1.Backend{ProtocolVersion: info.ProtocolVersion.String(), Capacity: c},
		RTT:     rtt,
		Outcome: health.Success,
	}
}
