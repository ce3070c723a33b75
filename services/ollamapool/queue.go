package ollamapool

import (
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
)

// waiter is a request waiting for a saturated pool, in the pool's priority queue.
type waiter struct {
	want   balance.Want
	result chan acquired // buffered: the pool never blocks handing over
}

// acquired is what a waiter receives: a node (already counted in flight) or why none.
type acquired struct {
	node *balance.Node
	err  error
}
