package lifecycle

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBackgroundStopsAndWaits(t *testing.T) {
	started, returned := make(chan struct{}), false
	b := Go(func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		returned = true
	})
	<-started
	require.NoError(t, b.Context().Err())
	b.Stop()
	require.True(t, returned, "Stop waits for the goroutine")
	require.Error(t, b.Context().Err())
	b.Stop() // twice is fine
	var none *Background
	none.Stop() // so is nil
}
