// Package health is the per-backend health state machine of discovery: consecutive probe
// results move a backend between healthy, degraded and down; a protocol mismatch makes it
// incompatible; probe intervals back off while it is down; latency is smoothed as an EWMA.
package health

import (
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// Policy holds the thresholds and intervals of the state machine.
type Policy struct {
	// DownAfter consecutive failures turn a degraded backend down (the first failure
	// already makes it degraded).
	DownAfter int
	// UpAfter consecutive successes bring a down backend back to healthy; a single flap
	// must not put it back into rotation.
	UpAfter int
	// Interval is the probe interval of a healthy or degraded backend.
	Interval time.Duration
	// MaxInterval caps the doubling interval of a down or incompatible backend.
	MaxInterval time.Duration
	// LatencyWeight is the EWMA weight of a new latency sample, in (0, 1].
	LatencyWeight float64
}

// Outcome is one probe result.
type Outcome int

// Probe outcomes.
const (
	// Success: the backend answered and proved to be what it claims.
	Success Outcome = iota + 1
	// Failure: unreachable, timed out, or not the kind of server expected.
	Failure
	// Incompatible: it is the right kind of server but speaks another protocol version.
	Incompatible
	// Busy: it accepted the connection but did not answer in time. A llama.cpp rpc-server
	// serves one client at a time, so one that a coordinator is using looks exactly like
	// this; a backend already known to work keeps its state, one never seen working fails.
	Busy
)

// Tracker is one backend's health. The zero value is a backend never probed.
type Tracker struct {
	state     commonv1.HealthState
	failures  int
	successes int
	latency   time.Duration
	interval  time.Duration
}

// State is the current health; HEALTH_STATE_UNSPECIFIED until the first probe.
func (t *Tracker) State() commonv1.HealthState { return t.state }

// ConsecutiveFailures counts failures since the last success.
func (t *Tracker) ConsecutiveFailures() int { return t.failures }

// Latency is the smoothed probe round trip (zero until a success).
func (t *Tracker) Latency() time.Duration { return t.latency }

// Observe records a probe outcome and its round-trip time, and returns how long to wait
// before the next probe.
func (t *Tracker) Observe(p Policy, o Outcome, rtt time.Duration) time.Duration {
	if o == Busy {
		if t.state == commonv1.HealthState_HEALTH_STATE_HEALTHY || t.state == commonv1.HealthState_HEALTH_STATE_DEGRADED {
			return p.Interval
		}
		o = Failure
	}
	switch o {
	case Success:
		t.failures = 0
		t.successes++
		t.observeLatency(p, rtt)
		switch {
		case t.state == commonv1.HealthState_HEALTH_STATE_DOWN && t.successes < p.UpAfter:
			// Stay down until it proves itself UpAfter times in a row.
		default:
			t.state = commonv1.HealthState_HEALTH_STATE_HEALTHY
		}
	case Failure:
		t.successes = 0
		t.failures++
		switch {
		case t.failures >= p.DownAfter || t.state == commonv1.HealthState_HEALTH_STATE_UNSPECIFIED:
			// A backend never seen working is down from its first failure: there is no
			// earlier success to give it the benefit of the doubt.
			t.state = commonv1.HealthState_HEALTH_STATE_DOWN
		case t.state != commonv1.HealthState_HEALTH_STATE_DOWN:
			t.state = commonv1.HealthState_HEALTH_STATE_DEGRADED
		}
	case Incompatible:
		t.successes = 0
		t.failures = 0
		t.observeLatency(p, rtt)
		t.state = commonv1.HealthState_HEALTH_STATE_INCOMPATIBLE
	}
	return t.nextInterval(p)
}

func (t *Tracker) observeLatency(p Policy, rtt time.Duration) {
	if t.latency == 0 {
		t.latency = rtt
		return
	}
	t.latency = time.Duration(p.LatencyWeight*float64(rtt) + (1-p.LatencyWeight)*float64(t.latency))
}

// nextInterval probes healthy and degraded backends at the base interval (a degraded one is
// exactly the one to keep an eye on) and backs off exponentially for backends that are down
// or incompatible, so a fleet of dead addresses costs little.
func (t *Tracker) nextInterval(p Policy) time.Duration {
	switch t.state {
	case commonv1.HealthState_HEALTH_STATE_DOWN, commonv1.HealthState_HEALTH_STATE_INCOMPATIBLE:
		if t.interval == 0 {
			t.interval = p.Interval
		} else {
			t.interval = min(2*t.interval, p.MaxInterval)
		}
		return t.interval
	default:
		t.interval = 0
		return p.Interval
	}
}
