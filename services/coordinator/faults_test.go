package coordinator_test

import (
	"context"

	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/doubles/llamaserver"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

func TestKilledLlamaServerIsRestartedForTheNextRequest(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "before", 4), 4)
	before := r.coordinatorOf(t, "tiny")

	// The test's manager started it, so the test may end it.
	require.NoError(t, syscall.Kill(int(before.GetPid()), syscall.SIGKILL))
	require.Eventually(t, func() bool { return !alive(before.GetPid()) }, 10*time.Second, 5*time.Millisecond)

	after := r.chat(ctxTimeout(t, time.Minute), "tiny", "after the crash", 4)
	requireComplete(t, after, 4)
	var c *coordinatorv1.Coordinator
	require.Eventually(t, func() bool {
		c = r.coordinatorOf(t, "tiny")
		return c.GetState() == ready && c.GetPid() != before.GetPid()
	}, time.Minute, 10*time.Millisecond, "a new process")
	require.EqualValues(t, 1, c.GetRestarts())
	require.Empty(t, c.GetLastError(), "cleared once ready again")
	s := r.stats(t)
	require.EqualValues(t, 1, s.GetRestartsTotal())
	require.EqualValues(t, 1, s.GetStartsTotal(), "a restart is not a cold start")
	require.Len(t, w.llamaProcesses("tiny"), 1)
}

func TestLostRPCBackendIsReplacedWhenTheModelStillFits(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(2), Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "hello", 4), 4)
	used := r.coordinatorOf(t, "tiny").GetRpcBackends()
	require.Len(t, used, 1, "the tiny model fits one backend: fewest backends win")

	lost := w.rpcs[0]
	if lost.Addr() != used[0] {
		lost = w.rpcs[1]
	}
	lost.Kill()

	// The double aborts as soon as its backend goes; a real llama-server only when it next
	// uses it. Either way requests keep coming until one runs on the rebuilt coordinator.
	var c *coordinatorv1.Coordinator
	require.Eventually(t, func() bool {
		res := r.chat(ctxTimeout(t, time.Minute), "tiny", "after losing a backend", 4)
		c = r.coordinatorOf(t, "tiny")
		return res.err == nil && res.chunks == 4 && c.GetState() == ready && len(c.GetRpcBackends()) == 1 &&
			c.GetRpcBackends()[0] != lost.Addr()
	}, time.Minute, 50*time.Millisecond, "rebuilt on the remaining backend")
	require.GreaterOrEqual(t, r.stats(t).GetRestartsTotal(), uint64(1))
	require.Len(t, w.llamaProcesses("tiny"), 1)
}

func TestLostRPCBackendFailsClearlyWhenTheModelNoLongerFits(t *testing.T) {
	w := newWorld(t, worldOptions{Models: []string{"tiny"}})
	if w.real {
		t.Skip("a real rpc-server reports the machine's memory, which always fits the tiny model")
	}
	big := newRPC(t, rpcserver.DeviceMemory{Free: 1 << 30, Total: 1 << 30})
	small := newRPC(t, rpcserver.DeviceMemory{Free: 1 << 20, Total: 1 << 20})
	w.rpcs = append(w.rpcs, big, small)
	w.startDiscovery([]string{big.Addr(), small.Addr()})
	r := w.start(w.config(nil))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "hello", 4), 4)
	require.Equal(t, []string{big.Addr()}, r.coordinatorOf(t, "tiny").GetRpcBackends())

	big.Kill()
	var res streamResult
	require.Eventually(t, func() bool {
		res = r.chat(ctxTimeout(t, time.Minute), "tiny", "after losing the big backend", 4)
		return rpcerr.Reason(res.err) == "MODEL_DOES_NOT_FIT"
	}, time.Minute, 50*time.Millisecond, "a clear error once the coordinator is gone; last: %v", res.err)
	st := requireStatus(t, res.err, codes.FailedPrecondition, "MODEL_DOES_NOT_FIT")
	require.Contains(t, st.Message(), "needs about")
	require.Contains(t, st.Message(), small.Addr()+" 1.0 MiB free", "the figures of what is left")
	require.Contains(t, infoOf(st).GetMetadata(), "needed_bytes")
	require.Empty(t, w.llamaProcesses("tiny"), "no coordinator is left running")
}

func TestLlamaServerThatExitsAtStartReportsItsStatusAndLog(t *testing.T) {
	w := newWorld(t, worldOptions{Models: []string{"tiny"}, NoDiscovery: true})
	// A backend etcd says is healthy but that nobody serves: llama-server aborts at start.
	dead, err := netutil.FreeLoopbackAddr()
	require.NoError(t, err)
	writeBackend(t, w, dead, commonv1.HealthState_HEALTH_STATE_HEALTHY)
	r := w.start(w.config(nil))

	start := time.Now()
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", "hello", 4)
	st := requireStatus(t, res.err, codes.FailedPrecondition, "NO_RPC_BACKENDS")
	require.Less(t, time.Since(start), 30*time.Second, "the exit is reported, not a timeout")
	require.Contains(t, st.Message(), "status 134", "the exit status")
	require.Contains(t, st.Message(), "Failed to connect to "+dead, "the last log lines")
	require.Contains(t, infoOf(st).GetMetadata()["exit_status"], "134")
	require.Contains(t, infoOf(st).GetMetadata()["log_tail"], dead)
}

func TestStreamThatBreaksOffIsAnErrorNotASuccess(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	if w.real {
		t.Skip("crashing in the middle of a stream on demand is a feature of the double")
	}
	r := w.start(w.config(nil))
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", "please "+llamaserver.CrashMarker, 20)
	st := requireStatus(t, res.err, codes.Unavailable, "COORDINATOR_STREAM_BROKEN")
	require.Nil(t, res.done, "no done event after a broken stream")
	require.Equal(t, 2, res.chunks, "the tokens that came were relayed")
	require.Contains(t, st.Message(), "after 2 tokens")
	require.Contains(t, st.Message(), "status 134", "with how the process ended")

	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "again", 4), 4)
	require.EqualValues(t, 1, r.stats(t).GetFailuresTotal())
}

func TestRejectedRequestIsRecordedWithItsRedactedText(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	// Far more than a 256-token slot, however the model tokenises it.
	secret := strings.Repeat("confidential words ", 160)
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", secret, 4)
	st := requireStatus(t, res.err, codes.InvalidArgument, "COORDINATOR_REJECTED_REQUEST")
	md := infoOf(st).GetMetadata()
	require.Equal(t, "400", md["http_status"])
	require.Equal(t, "exceed_context_size_error", md["upstream_type"])
	require.Contains(t, md["request"], "<redacted: 3040 chars>", "the request is recorded, its text redacted")
	require.NotContains(t, md["request"], "confidential")
	require.NotContains(t, st.Message(), "confidential")
}

func TestSlowClientCancelReachesLlamaServer(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "warm up", 2), 2)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := r.client.Chat(ctx, chatRequest("tiny", "long one", 200))
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	cancel()
	require.Eventually(t, func() bool { return r.coordinatorOf(t, "tiny").GetInFlight() == 0 }, 10*time.Second, 10*time.Millisecond,
		"a cancelled request releases its coordinator")
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "still fine", 3), 3)
}

// newRPC starts one rpc-server with the given device.
func newRPC(t *testing.T, d rpcserver.DeviceMemory) *rpcProcess {
	t.Helper()
	return startRPC(t, []rpcserver.DeviceMemory{d})
}

// writeBackend puts an rpc backend record into etcd as discovery would.
func writeBackend(t *testing.T, w *world, addr string, health commonv1.HealthState) {
	t.Helper()
	store := registry.NewStore(w.cluster.Client(), registry.BackendsPrefix, registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} }))
	require.NoError(t, store.Put(ctxTimeout(t, 5*time.Second), "rpc@"+addr, &commonv1.Backend{
		Id: "rpc@" + addr, Kind: commonv1.BackendKind_BACKEND_KIND_RPC, Address: addr, Health: health, LastSeen: timestamppb.Now(),
		Capacity: &commonv1.Capacity{TotalBytes: 1 << 30, FreeBytes: 1 << 30,
			Devices: []*commonv1.DeviceMemory{{Name: "RPC0", TotalBytes: 1 << 30, FreeBytes: 1 << 30}}},
	}))
}

// A real llama-server notices a dead backend only when it next uses it; the manager does not
// wait for that: a backend discovery reports down has its coordinator rebuilt elsewhere.
func TestBackendReportedDownIsLeftForTheOthers(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(2), Models: []string{"tiny"}, NoDiscovery: true})
	for _, p := range w.rpcs {
		writeBackend(t, w, p.Addr(), commonv1.HealthState_HEALTH_STATE_HEALTHY)
	}
	r := w.start(w.config(nil))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "hello", 3), 3)
	first := r.coordinatorOf(t, "tiny").GetRpcBackends()[0]

	writeBackend(t, w, first, commonv1.HealthState_HEALTH_STATE_DOWN)
	var c *coordinatorv1.Coordinator
	require.Eventually(t, func() bool {
		c = r.coordinatorOf(t, "tiny")
		return c.GetState() == ready && len(c.GetRpcBackends()) == 1 && c.GetRpcBackends()[0] != first
	}, time.Minute, 20*time.Millisecond, "rebuilt away from the down backend")
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "after", 3), 3)
	require.Len(t, w.llamaProcesses("tiny"), 1)
}

func TestMissingLlamaServerBinaryIsExplained(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(func(c *coordinator.Config) { c.LlamaServer = "/nonexistent/llama-server" }))
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", "hi", 2)
	st := requireStatus(t, res.err, codes.FailedPrecondition, "LLAMA_SERVER_UNAVAILABLE")
	require.Contains(t, st.Message(), "coordinator.llama-server")
}

func TestStartThatTakesTooLongIsGivenUpAndStopped(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{LoadTime: time.Minute}})
	if w.real {
		t.Skip("a real llama-server's load time cannot be stretched")
	}
	r := w.start(w.config(func(c *coordinator.Config) {
		c.StartTimeout = 500 * time.Millisecond
		c.StartTimeoutPerGiB = 0
	}))
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", "hi", 2)
	st := requireStatus(t, res.err, codes.Unavailable, "COORDINATOR_START_FAILED")
	require.Contains(t, st.Message(), "did not answer GET /health with 200 within 500ms")
	require.Contains(t, st.Message(), "load_tensors", "with the last log lines")
	require.Empty(t, w.llamaProcesses("tiny"), "the slow process is stopped, not left behind")
}
