package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
)

// A coordinator serves as many requests at once as it has slots; the rest wait in the
// manager, highest priority first, a cancelled waiter leaves the queue, and a full queue
// answers RESOURCE_EXHAUSTED at once.
func TestBusySlotsQueueByPriority(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{TokenInterval: 20 * time.Millisecond}})
	r := w.start(w.config(func(c *coordinator.Config) {
		c.Parallel = 1
		c.QueueSize = 2
	}))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "warm up", 1), 1)
	waitCounts := func(inFlight, queued uint32) {
		t.Helper()
		require.Eventually(t, func() bool {
			c := r.coordinatorOf(t, "tiny")
			return c.GetInFlight() == inFlight && c.GetQueued() == queued
		}, 30*time.Second, 5*time.Millisecond, "want %d in flight, %d queued", inFlight, queued)
	}
	start := func(ctx context.Context, priority int32, maxTokens int32) chan streamResult {
		out := make(chan streamResult, 1)
		req := chatRequest("tiny", "queued", maxTokens)
		req.Priority = priority
		go func() { out <- r.chatReq(ctx, req) }()
		return out
	}

	holder := start(ctxTimeout(t, time.Minute), 5, 200) // holds the only slot for about 4 s
	waitCounts(1, 0)
	lowCtx, cancelLow := context.WithCancel(context.Background())
	defer cancelLow()
	low := start(lowCtx, 1, 3)
	waitCounts(2, 1)
	high := start(ctxTimeout(t, time.Minute), 10, 3)
	waitCounts(3, 2)

	full := r.chatReq(ctxTimeout(t, time.Minute), chatRequest("tiny", "no room", 3))
	st := requireStatus(t, full.err, codes.ResourceExhausted, "COORDINATOR_SATURATED")
	require.Contains(t, st.Message(), "2 requests are already waiting")

	cancelLow()
	require.Equal(t, codes.Canceled, requireCode(t, (<-low).err))
	waitCounts(2, 1)
	mid := start(ctxTimeout(t, time.Minute), 3, 3)
	waitCounts(3, 2)

	require.NoError(t, (<-holder).err)
	h, m := <-high, <-mid
	requireComplete(t, h, 3)
	requireComplete(t, m, 3)
	require.True(t, h.firstChunk.Before(m.firstChunk), "priority 10 is served before priority 3, which came first")
	waitCounts(0, 0)
}

func requireCode(t *testing.T, err error) codes.Code {
	t.Helper()
	require.Error(t, err)
	return status.Code(err)
}
