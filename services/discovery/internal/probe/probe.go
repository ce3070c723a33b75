// Package probe verifies that an address really is the backend it is said to be and learns
// its capacity: Ollama through its HTTP API, llama.cpp rpc-servers through the ggml-rpc
// handshake and memory queries. A probe never loads a model.
package probe

import (
	"context"
	"fmt"
	"net/http"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
)

// Result is one probe's outcome. Backend carries what the probe learnt (version, capacity,
// models); identity, health and sources are the caller's to fill.
type Result struct {
	Backend *commonv1.Backend
	RTT     time.Duration
	Outcome health.Outcome
	Err     error
}

const outcomeSuccess = health.Success

func failed(err error) Result { return Result{Outcome: health.Failure, Err: err} }

// Prober probes backends of every kind.
type Prober struct {
	http    *http.Client
	timeout time.Duration
	shows   showCache // what /api/show said of each Ollama model, by digest
}

// New returns a prober whose probes each take at most timeout.
func New(timeout time.Duration) *Prober {
	return &Prober{
		http: &http.Client{
			// Probes must not follow a redirect to somewhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport: &http.Transport{
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     30 * time.Second,
			},
		},
		timeout: timeout,
	}
}

// Probe verifies addr as a backend of kind within the prober's timeout.
func (p *Prober) Probe(ctx context.Context, kind commonv1.BackendKind, addr string) Result {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	switch kind {
	case commonv1.BackendKind_BACKEND_KIND_OLLAMA:
		return p.probeOllama(ctx, addr)
	case commonv1.BackendKind_BACKEND_KIND_RPC:
		return p.probeRPC(ctx, addr)
	default:
		return failed(fmt.Errorf("backend kind %s cannot be probed", kind))
	}
}

// Close releases idle connections.
func (p *Prober) Close() { p.http.CloseIdleConnections() }
