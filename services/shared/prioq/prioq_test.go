package prioq

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHighestPriorityFirstThenArrival(t *testing.T) {
	var q Queue[string]
	q.Push(5, "a")
	b := q.Push(9, "b")
	q.Push(5, "c")
	q.Push(1, "d")
	q.Push(9, "e")
	require.Equal(t, 5, q.Len())
	require.Equal(t, "b", q.Peek().Value)

	var ordered []string
	for _, it := range q.Ordered() {
		ordered = append(ordered, it.Value)
	}
	require.Equal(t, []string{"b", "e", "a", "c", "d"}, ordered)
	require.Equal(t, 5, q.Len(), "listing takes nothing out")

	require.True(t, q.Remove(b))
	require.False(t, q.Remove(b), "already out")
	var order []string
	for {
		it, ok := q.Pop()
		if !ok {
			break
		}
		order = append(order, it.Value)
		require.False(t, q.Remove(it), "a popped item is out")
	}
	require.Equal(t, []string{"e", "a", "c", "d"}, order)
	require.Nil(t, q.Peek())
	require.Zero(t, q.Len())
}
