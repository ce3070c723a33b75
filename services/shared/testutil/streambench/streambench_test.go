package streambench

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMeasureCountsEveryRequest(t *testing.T) {
	r, err := Measure(4, 5, 3, 0, func() (time.Duration, int, error) { return time.Millisecond, 3, nil })
	require.NoError(t, err)
	require.Len(t, r.TTFT, 20)
	require.Equal(t, 60, r.Tokens)
	require.Equal(t, time.Millisecond, r.P(50))
	require.Len(t, r.Total, 20)
	both := r.Merge(r)
	require.Len(t, both.TTFT, 40)
	require.Len(t, r.TTFT, 20, "merging leaves the parts alone")

	_, err = Measure(2, 3, 3, 0, func() (time.Duration, int, error) { return 0, 2, nil })
	require.ErrorContains(t, err, "2 tokens instead of 3")
	boom := errors.New("boom")
	_, err = Measure(2, 3, 3, 0, func() (time.Duration, int, error) { return 0, 0, boom })
	require.ErrorIs(t, err, boom)
}

func TestPercentiles(t *testing.T) {
	r := Run{TTFT: []time.Duration{5, 1, 4, 2, 3}}
	require.Equal(t, time.Duration(3), r.P(50))
	require.Equal(t, time.Duration(4), r.P(99))
	require.Equal(t, 0.5, Ms(500*time.Microsecond))
	require.Equal(t, time.Duration(5), Percentile([]time.Duration{5, 1, 4, 2, 3}, 100))
	require.Equal(t, time.Duration(0), Percentile(nil, 50))
}

func TestSpreadStartsStreamsApart(t *testing.T) {
	var (
		mu     sync.Mutex
		starts []time.Duration
	)
	t0 := time.Now()
	r, err := Measure(4, 1, 1, 400*time.Millisecond, func() (time.Duration, int, error) {
		mu.Lock()
		starts = append(starts, time.Since(t0))
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		return 0, 1, nil
	})
	require.NoError(t, err)
	slices.Sort(starts)
	for i, s := range starts {
		require.GreaterOrEqual(t, s, time.Duration(i)*100*time.Millisecond, "stream %d starts at its share of the spread", i)
	}
	require.GreaterOrEqual(t, r.Elapsed, 300*time.Millisecond, "the wall time includes the last stream's wait")
	require.GreaterOrEqual(t, r.PTotal(0), 5*time.Millisecond, "a request's total time is all of its call")
	require.Equal(t, 5*time.Millisecond, SpreadOver(Run{Elapsed: 20 * time.Millisecond}, 4))
}
