package coordinator_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil"
)

// child is a coordinator-manager running in a process of its own (this test binary in child
// mode), so it can be killed like a crashed manager.
type child struct {
	cmd      *exec.Cmd
	addr     string
	instance string
	output   *testutil.SyncBuffer
	exited   chan struct{}
}

func (w *world) startChild(cfg coordinator.Config) *child {
	w.t.Helper()
	spec, err := json.Marshal(childSpec{Etcd: w.cluster.Endpoint(), Config: cfg})
	require.NoError(w.t, err)
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$"), output: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	c.cmd.Stderr = c.output
	stdout, err := c.cmd.StdoutPipe()
	require.NoError(w.t, err)
	require.NoError(w.t, c.cmd.Start())
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				lines <- sc.Text()
			}
		}
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	w.t.Cleanup(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if w.t.Failed() {
			w.t.Logf("child manager output:\n%s", c.output.String())
		}
	})
	select {
	case line := <-lines:
		f := strings.Fields(line)
		c.addr, c.instance = f[1], f[2]
	case <-c.exited:
		w.t.Fatalf("child manager exited before it was ready:\n%s", c.output.String())
	case <-time.After(60 * time.Second):
		w.t.Fatalf("child manager not ready:\n%s", c.output.String())
	}
	return c
}

// kill ends the child with SIGKILL, as a crash would.
func (c *child) kill(t *testing.T) {
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.exited
}

// ensure makes the model ready through the child and returns its coordinator.
func ensure(t testing.TB, cli coordinatorv1.CoordinatorServiceClient, model string) *coordinatorv1.Coordinator {
	t.Helper()
	stream, err := cli.EnsureCoordinator(ctxTimeout(t, 30*time.Second), &coordinatorv1.EnsureCoordinatorRequest{Model: model})
	require.NoError(t, err)
	for {
		msg, err := stream.Recv()
		require.NoError(t, err)
		if c := msg.GetReady(); c != nil {
			return c
		}
	}
}

func alive(pid int32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// A manager killed with SIGKILL leaves no llama-server behind, and the next run on the same
// data folder finds the state of the previous one and reconciles it: stale processes stopped,
// its records removed and its ownership locks revoked (not left to expire: the lease TTL here
// is longer than the test waits).
func TestManagerKilledLeavesNoOrphanAndTheNextRunReconciles(t *testing.T) {
	for _, killWithManager := range []bool{true, false} {
		t.Run(fmt.Sprintf("kill-with-manager=%v", killWithManager), func(t *testing.T) {
			w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
			cfg := w.config(func(c *coordinator.Config) {
				c.KillWithManager = killWithManager
				c.LeaseTTL = 60 * time.Second
			})
			first := w.startChild(cfg)
			c := ensure(t, dial(t, first.addr), "tiny")
			pid := c.GetPid()
			require.Equal(t, first.instance, c.GetOwner())
			require.True(t, alive(pid))

			first.kill(t)
			if killWithManager {
				require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 10*time.Millisecond,
					"the kernel kills the coordinator with its manager")
			} else {
				require.True(t, alive(pid), "without the parent-death signal the coordinator outlives its manager: an orphan")
			}

			second := w.startChild(cfg)
			require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 10*time.Millisecond,
				"the next run stops the orphan it finds in its state file")
			records := registry.NewStore(w.cluster.Client(), registry.CoordinatorsPrefix,
				registry.ProtoJSON(func() *coordinatorv1.Coordinator { return &coordinatorv1.Coordinator{} }))
			items, _, _, err := records.List(ctxTimeout(t, 5*time.Second))
			require.NoError(t, err)
			for _, rec := range items {
				require.NotEqual(t, first.instance, rec.GetOwner(), "the dead run's records are gone")
			}

			again := ensure(t, dial(t, second.addr), "tiny")
			require.Equal(t, second.instance, again.GetOwner(), "ownership passed without waiting out the old lease")
			require.NotEqual(t, pid, again.GetPid())
			require.Len(t, w.llamaProcesses("tiny"), 1, "exactly one coordinator")

			res := (&replica{client: dial(t, second.addr)}).chat(ctxTimeout(t, time.Minute), "tiny", "still works", 3)
			requireComplete(t, res, 3)

		})
	}
}
