package ollamapool_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/doubles/ollamafake"
	"github.com/sollol/mesh/services/ollamapool"
)

// A thousand streams cancelled mid-answer leave nothing behind: every upstream request is
// cancelled, every slot is released, and the goroutine count returns to where it was. (A
// fake node is used because it can hold a thousand answers open at once; the real node's
// cancellation is tested in TestClientCancelCancelsTheUpstreamRequest.)
func TestThousandCancelledStreamsLeakNothing(t *testing.T) {
	fake := ollamafake.StartT(t, ollamafake.Behaviour{StallAfter: 1, Models: []string{"tiny:latest"}})
	f := newFixture(t, func(c *ollamapool.Config) {
		c.MaxInFlightPerNode = 2000
		c.QueueSize = 2000
	})
	f.publish(fake.Addr(), "tiny:latest")
	f.chat(context.Background(), "warm up the connections", 1, nil)
	baseline := runtime.NumGoroutine()

	const streams = 1000
	parallel(streams, func(int) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := f.client.Chat(ctx, chatRequest("stall", 100))
		require.NoError(t, err)
		_, err = stream.Recv() // the first chunk arrives, then the node goes silent
		require.NoError(t, err)
		cancel()
	})

	require.Eventually(t, func() bool { return fake.Cancelled() >= streams }, 30*time.Second, 10*time.Millisecond,
		"every upstream request must be cancelled; %d of %d were", fake.Cancelled(), streams)
	require.Eventually(t, func() bool {
		stats, err := f.client.GetStats(context.Background(), &ollamapoolv1.GetStatsRequest{})
		return err == nil && stats.GetInFlight() == 0 && stats.GetNodes()[0].GetInFlight() == 0
	}, 30*time.Second, 10*time.Millisecond, "every slot must be released")
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseline+10 }, 30*time.Second, 20*time.Millisecond,
		"goroutines did not return to the baseline of %d: %d now", baseline, runtime.NumGoroutine())
}
