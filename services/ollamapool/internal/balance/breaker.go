// Package balance is the pool's choice of node: per-node state (in-flight requests, latency
// and time-to-first-token averages, error classes, circuit breaker), the scoring strategies,
// and power-of-two-choices among the best. It is pure logic over a clock the caller passes,
// so every rule is tested with tables.
package balance

import (
	"time"

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
)

// BreakerPolicy tunes the per-node circuit breaker.
type BreakerPolicy struct {
	// FailureThreshold consecutive node faults open the circuit.
	FailureThreshold int
	// Cooldown is how long a circuit opened by faults stays open before one trial request;
	// it doubles after each failed trial, up to MaxCooldown.
	Cooldown, MaxCooldown time.Duration
	// BusyCooldown is how long a node that answered "busy" (503/429) gets no new requests;
	// it doubles while the node keeps answering busy, up to MaxCooldown.
	BusyCooldown time.Duration
}

// Breaker is one node's circuit. Faults (unreachable, 5xx, timeouts, broken streams) and
// saturation (busy answers) are kept apart: a busy node is healthy but full, so the pool
// waits for it or goes elsewhere, and never counts it as broken.
type Breaker struct {
	failures  int
	busy      bool // open because the node is saturated, not broken
	open      bool
	openUntil time.Time
	cooldown  time.Duration
	trial     bool // a half-open trial request is in flight
}

// State reports the circuit as the API shows it.
func (b *Breaker) State(now time.Time) ollamapoolv1.CircuitState {
	switch {
	case !b.open:
		return ollamapoolv1.CircuitState_CIRCUIT_STATE_CLOSED
	case now.Before(b.openUntil):
		return ollamapoolv1.CircuitState_CIRCUIT_STATE_OPEN
	default:
		return ollamapoolv1.CircuitState_CIRCUIT_STATE_HALF_OPEN
	}
}

// Busy reports whether the circuit is open only because the node is saturated.
func (b *Breaker) Busy(now time.Time) bool { return b.open && b.busy && now.Before(b.openUntil) }

// Allow says whether a new request may go to the node now. After the cooldown exactly one
// trial request is let through (half-open); its outcome closes or reopens the circuit.
func (b *Breaker) Allow(now time.Time) bool {
	switch {
	case !b.open:
		return true
	case now.Before(b.openUntil):
		return false
	default:
		return !b.trial
	}
}

// Started records that a request was sent (it becomes the trial when half-open).
func (b *Breaker) Started(now time.Time) {
	if b.open && !now.Before(b.openUntil) {
		b.trial = true
	}
}

// Success closes the circuit.
func (b *Breaker) Success() {
	*b = Breaker{}
}

// Fault records a failure that is the node's fault.
func (b *Breaker) Fault(p BreakerPolicy, now time.Time) {
	b.failures++
	b.trial = false
	switch {
	case b.open && !b.busy:
		// A failed trial: stay open, longer.
		b.cooldown = min(2*b.cooldown, p.MaxCooldown)
	case b.failures >= p.FailureThreshold:
		b.cooldown = p.Cooldown
	default:
		return
	}
	b.open, b.busy = true, false
	b.openUntil = now.Add(b.cooldown)
}

// Saturated records a busy answer: the node gets no new request for a while, at once (the
// first 503 already says its queue is full; hammering it makes things worse).
func (b *Breaker) Saturated(p BreakerPolicy, now time.Time) {
	b.trial = false
	if b.open && b.busy {
		b.cooldown = min(2*b.cooldown, p.MaxCooldown)
	} else if !b.open {
		b.cooldown = p.BusyCooldown
		b.busy = true
		b.open = true
	} else {
		return // already open for faults; a busy answer does not shorten that
	}
	b.openUntil = now.Add(b.cooldown)
}

// Neutral records an outcome that says nothing about the node (the caller left, the model
// was missing): a trial slot is released without closing or reopening the circuit.
func (b *Breaker) Neutral() { b.trial = false }
