package manager

import (
	"context"

	"github.com/sollol/mesh/services/shared/rpcerr"
)

// WaitSlot waits for one of the coordinator's slots (its -np). At most that many requests
// reach llama-server at once; the rest wait here, highest priority first, rather than in
// llama-server's own first-come queue, where a priority would mean nothing. A full wait
// queue answers RESOURCE_EXHAUSTED at once.
func (l *Lease) WaitSlot(ctx context.Context, priority int32) error {
	m, e := l.m, l.e
	m.mu.Lock()
	if e.slotsBusy < slotsOf(e) && e.slotQueue.Len() == 0 {
		e.slotsBusy++
		l.slot = true
		m.mu.Unlock()
		return nil
	}
	if e.slotQueue.Len() >= m.cfg.QueueSize {
		busy := e.slotsBusy
		m.mu.Unlock()
		return rpcerr.New(rpcerr.KindResourceExhausted, "COORDINATOR_SATURATED",
			"all %d slots of model %s's coordinator are busy and %d requests are already waiting; retry later", busy, e.model, m.cfg.QueueSize)
	}
	turn := make(chan struct{}, 1)
	queued := e.slotQueue.Push(priority, turn)
	m.mu.Unlock()
	select {
	case <-turn:
		l.slot = true
		return nil
	case <-ctx.Done():
		m.mu.Lock()
		if !e.slotQueue.Remove(queued) {
			l.slot = true // handed over in the same instant: Release gives it back
		}
		m.mu.Unlock()
		return ctx.Err()
	}
}

// releaseSlotLocked frees the lease's slot and hands free slots to the first waiters.
func (m *Manager) releaseSlotLocked(e *entry) {
	e.slotsBusy--
	for e.slotsBusy < slotsOf(e) {
		next, ok := e.slotQueue.Pop()
		if !ok {
			return
		}
		e.slotsBusy++
		next.Value <- struct{}{}
	}
}

// slotsOf is how many requests the coordinator serves at once.
func slotsOf(e *entry) int { return max(int(e.parallel), 1) }
