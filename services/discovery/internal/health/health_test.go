package health_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
)

var policy = health.Policy{DownAfter: 3, UpAfter: 2, Interval: time.Second, MaxInterval: 8 * time.Second, LatencyWeight: 0.5}

const (
	ok      = health.Success
	fail    = health.Failure
	compat  = health.Incompatible
	busy    = health.Busy
	healthy = commonv1.HealthState_HEALTH_STATE_HEALTHY
	degr    = commonv1.HealthState_HEALTH_STATE_DEGRADED
	down    = commonv1.HealthState_HEALTH_STATE_DOWN
	incomp  = commonv1.HealthState_HEALTH_STATE_INCOMPATIBLE
)

func TestStateMachine(t *testing.T) {
	tests := []struct {
		name      string
		outcomes  []health.Outcome
		states    []commonv1.HealthState
		intervals []time.Duration
	}{
		{"first success is healthy", []health.Outcome{ok}, []commonv1.HealthState{healthy}, []time.Duration{time.Second}},
		{"never seen working is down at once", []health.Outcome{fail, fail}, []commonv1.HealthState{down, down},
			[]time.Duration{time.Second, 2 * time.Second}},
		{"healthy degrades, then goes down after DownAfter failures",
			[]health.Outcome{ok, fail, fail, fail}, []commonv1.HealthState{healthy, degr, degr, down},
			[]time.Duration{time.Second, time.Second, time.Second, time.Second}},
		{"degraded recovers on one success", []health.Outcome{ok, fail, ok}, []commonv1.HealthState{healthy, degr, healthy},
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"down needs UpAfter successes", []health.Outcome{fail, ok, ok}, []commonv1.HealthState{down, down, healthy},
			[]time.Duration{time.Second, 2 * time.Second, time.Second}},
		{"a flap resets the climb back", []health.Outcome{fail, ok, fail, ok}, []commonv1.HealthState{down, down, down, down},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}},
		{"down backs off to the cap", []health.Outcome{fail, fail, fail, fail, fail}, []commonv1.HealthState{down, down, down, down, down},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}},
		{"incompatible is its own state and backs off", []health.Outcome{ok, compat, compat}, []commonv1.HealthState{healthy, incomp, incomp},
			[]time.Duration{time.Second, time.Second, 2 * time.Second}},
		{"busy keeps a working backend as it is", []health.Outcome{ok, busy, busy}, []commonv1.HealthState{healthy, healthy, healthy},
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"busy keeps a degraded backend degraded", []health.Outcome{ok, fail, busy, ok}, []commonv1.HealthState{healthy, degr, degr, healthy},
			[]time.Duration{time.Second, time.Second, time.Second, time.Second}},
		{"busy is a failure for a backend never seen working", []health.Outcome{busy}, []commonv1.HealthState{down},
			[]time.Duration{time.Second}},
		{"incompatible then fixed is healthy", []health.Outcome{compat, ok}, []commonv1.HealthState{incomp, healthy},
			[]time.Duration{time.Second, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr health.Tracker
			for i, o := range tt.outcomes {
				next := tr.Observe(policy, o, time.Millisecond)
				require.Equal(t, tt.states[i], tr.State(), "after outcome %d", i)
				require.Equal(t, tt.intervals[i], next, "interval after outcome %d", i)
			}
		})
	}
}

func TestLatencyEWMA(t *testing.T) {
	var tr health.Tracker
	tr.Observe(policy, ok, 10*time.Millisecond)
	require.Equal(t, 10*time.Millisecond, tr.Latency(), "the first sample seeds the average")
	tr.Observe(policy, ok, 20*time.Millisecond)
	require.Equal(t, 15*time.Millisecond, tr.Latency())
	tr.Observe(policy, fail, time.Hour)
	require.Equal(t, 15*time.Millisecond, tr.Latency(), "failures carry no latency")
	require.Equal(t, 1, tr.ConsecutiveFailures())
}
