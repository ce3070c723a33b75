package ollamapool

import (
	"container/heap"

	"github.com/sollol/mesh/services/ollamapool/internal/balance"
)

// waiter is a request waiting for a saturated pool.
type waiter struct {
	priority int32
	seq      uint64 // arrival order, so equal priorities are first come, first served
	want     balance.Want
	result   chan acquired // buffered: the pool never blocks handing over
	index    int
}

// acquired is what a waiter receives: a node (already counted in flight) or why none.
type acquired struct {
	node *balance.Node
	err  error
}

// waitQueue orders waiters by priority, highest first, then by arrival.
type waitQueue []*waiter

func (q waitQueue) Len() int { return len(q) }
func (q waitQueue) Less(i, j int) bool {
	if q[i].priority != q[j].priority {
		return q[i].priority > q[j].priority
	}
	return q[i].seq < q[j].seq
}
func (q waitQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *waitQueue) Push(x any) {
	w := x.(*waiter)
	w.index = len(*q)
	*q = append(*q, w)
}
func (q *waitQueue) Pop() any {
	old := *q
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	w.index = -1
	return w
}

// remove takes w out wherever it is; a waiter already served has index -1.
func (q *waitQueue) remove(w *waiter) bool {
	if w.index < 0 {
		return false
	}
	heap.Remove(q, w.index)
	return true
}
