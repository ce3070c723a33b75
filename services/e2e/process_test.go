package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/testutil"
)

// sollolProcess is one running sollol binary in its own process group.
type sollolProcess struct {
	t      testing.TB
	cmd    *exec.Cmd
	output *testutil.SyncBuffer
	exited chan struct{}
	err    error
}

// startSollol runs the binary with args; it is killed (with its group) at the end of the test
// if it is still running, and its output is logged when the test fails.
func startSollol(t testing.TB, args ...string) *sollolProcess {
	t.Helper()
	return startSollolWith(t, nil, args...)
}

// startSollolWith runs the binary behind a command prefix (e.g. taskset), if any.
func startSollolWith(t testing.TB, prefix []string, args ...string) *sollolProcess {
	t.Helper()
	argv := append(append(slices.Clone(prefix), sollolBin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Keep the test's environment from leaking SOLLOL_* settings into the process.
	cmd.Env = cleanEnv()
	require.NoError(t, cmd.Start())
	p := &sollolProcess{t: t, cmd: cmd, output: out, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("sollol output:\n%s", out.String())
		}
	})
	return p
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOLLOL_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitExit waits up to limit for the process to end and returns its exit code.
func (p *sollolProcess) waitExit(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(limit):
		p.t.Fatalf("sollol still running %s after it was asked to stop", limit)
	}
	if p.err == nil {
		return 0
	}
	exitErr, ok := p.err.(*exec.ExitError)
	require.True(p.t, ok, "wait: %v", p.err)
	return exitErr.ExitCode()
}

// groupAlive reports whether any process of the sollol's process group still exists.
func (p *sollolProcess) groupAlive() bool {
	err := syscall.Kill(-p.cmd.Process.Pid, 0)
	return err == nil
}

// runSollol runs the binary to completion and returns its exit code and output.
func runSollol(t *testing.T, limit time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, sollolBin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "sollol %v did not exit within %s:\n%s", args, limit, out)
	if err == nil {
		return 0, string(out)
	}
	exitErr, ok := err.(*exec.ExitError)
	require.True(t, ok, "run: %v", err)
	return exitErr.ExitCode(), string(out)
}

// lastLine is the final non-empty line of output.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// upPorts are free loopback addresses for one `sollol up`, never the public defaults.
type upPorts struct {
	http, router, discovery, pool, coordinator, etcdClient, etcdPeer string
}

func freePorts(t testing.TB) upPorts {
	t.Helper()
	next := func() string {
		addr, err := netutil.FreeLoopbackAddr()
		require.NoError(t, err)
		return addr
	}
	return upPorts{next(), next(), next(), next(), next(), next(), next()}
}

func (u upPorts) args() []string {
	return []string{
		"--http-addr", u.http,
		"--router.grpc-addr", u.router,
		"--discovery.grpc-addr", u.discovery,
		"--ollamapool.grpc-addr", u.pool,
		"--coordinator.grpc-addr", u.coordinator,
		"--etcd.embed-client-addr", u.etcdClient,
		"--etcd.embed-peer-addr", u.etcdPeer,
	}
}

// httpGet returns the status and body of GET url, or an error while nothing listens yet.
func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
