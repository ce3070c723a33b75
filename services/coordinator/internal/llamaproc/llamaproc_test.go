package llamaproc

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParserReadsProgressDotsFromPartialLines(t *testing.T) {
	var events []Event
	var lines []string
	p := &parser{emit: func(e Event) { events = append(events, e) }, onLine: func(l string) { lines = append(lines, l) }}
	p.write([]byte("load_tensors: loading model tensors, this can take a while... (mmap = true)\n"))
	p.write([]byte("load_tensors:  RPC0[127.0.0.1:50052] model buffer size =     0.41 MiB\n.........."))
	p.write([]byte(strings.Repeat(".", 40)))
	p.write([]byte(strings.Repeat(".", 50) + "\nllama_context: constructing llama_context\n"))
	p.write([]byte("main: server is listening on http://127.0.0.1:8080 - starting the main loop\n"))

	var fractions []float32
	for _, e := range events {
		if e.Stage == commonv1.LoadStage_LOAD_STAGE_LOADING && e.Fraction >= 0 {
			fractions = append(fractions, e.Fraction)
		}
	}
	require.Equal(t, []float32{0.1, 0.5, 1}, fractions, "progress as the dots arrive, before the newline")
	require.Equal(t, commonv1.LoadStage_LOAD_STAGE_WARMING, events[len(events)-1].Stage)
	require.True(t, p.findings.Listening)
	require.NotContains(t, lines, strings.Repeat(".", 100), "the dot line is progress, not a log line")
}

func TestParserFindsCausesOfExits(t *testing.T) {
	p := &parser{emit: func(Event) {}}
	p.write([]byte("/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp:570: Failed to connect to 10.0.0.7:50052\n"))
	p.write([]byte("main: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080\n"))
	p.write([]byte("ggml-rpc.cpp:570: Remote RPC server crashed or returned malformed response"))
	p.flush()
	require.Equal(t, []string{"10.0.0.7:50052"}, p.findings.Unreachable)
	require.True(t, p.findings.PortInUse)
	require.True(t, p.findings.BackendCrashed)
}

func TestSpecArgs(t *testing.T) {
	s := Spec{Model: "/m.gguf", RPC: []string{"a:1", "b:2"}, Split: []float32{0.75, 0.25}, Context: 1024, Parallel: 4,
		GPULayers: 99, Threads: 1, Host: "127.0.0.1", Port: 9000, Extra: []string{"--no-webui"}}
	require.Equal(t, "--model /m.gguf -ngl 99 -c 1024 -np 4 -t 1 --host 127.0.0.1 --port 9000 --rpc a:1,b:2 --tensor-split 0.7500,0.2500 --no-webui",
		strings.Join(s.Args(), " "))
}

// script writes an executable shell script standing in for llama-server.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-llama-server")
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return p
}

func TestExitDuringStartIsReportedWithStatusAndTail(t *testing.T) {
	l := NewLauncher(true)
	defer l.Close()
	bin := script(t, `echo "loading" >&2; echo "ggml-rpc.cpp:570: Failed to connect to 127.0.0.1:1" >&2; exit 134`)
	p, err := l.Start(Spec{Binary: bin, Host: "127.0.0.1", Port: 1, LogPath: filepath.Join(t.TempDir(), "log")})
	require.NoError(t, err)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	err = p.WaitReady(context.Background(), time.Minute, client)
	var se *StartError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "exit status 134", se.Status)
	require.Equal(t, []string{"127.0.0.1:1"}, se.Findings.Unreachable)
	require.Contains(t, se.Error(), "Failed to connect to 127.0.0.1:1")
	log, err := os.ReadFile(p.Spec().LogPath)
	require.NoError(t, err)
	require.Contains(t, string(log), "loading")
}

func TestStopEndsTheWholeProcessGroup(t *testing.T) {
	l := NewLauncher(true)
	defer l.Close()
	// A "server" that starts a child of its own and ignores SIGTERM.
	bin := script(t, `trap "" TERM; sleep 300 & wait`)
	p, err := l.Start(Spec{Binary: bin, Host: "127.0.0.1", Port: 1})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(groupMembers(p.PID())) == 2 }, 5*time.Second, 10*time.Millisecond)
	p.Stop(200 * time.Millisecond)
	<-p.Exited()
	require.Empty(t, groupMembers(p.PID()), "nothing of the group survives")
	require.Contains(t, p.ExitStatus(), "killed by signal")
}

func TestStateFileFindsOnlyItsOwnProcesses(t *testing.T) {
	dir := t.TempDir()
	sf, prev, err := OpenState(dir)
	require.NoError(t, err)
	require.Zero(t, prev.Instance)
	_, _, err = OpenState(dir)
	require.ErrorContains(t, err, "in use by another coordinator-manager", "one manager per folder")

	// A process of ours (its own group, like a coordinator) and a record whose command line
	// does not match the live process: only the first may be stopped.
	ours := exec.Command("sleep", "300")
	ours.SysProcAttr = sysProcAttr(false)
	require.NoError(t, ours.Start())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ours.Wait() }()
	defer wg.Wait()
	ticks, err := startTicks(ours.Process.Pid)
	require.NoError(t, err)
	mine := ProcRecord{Model: "m", PID: ours.Process.Pid, StartTicks: ticks, Argv: []string{"sleep", "300"}}
	notMine := mine
	notMine.Argv = []string{"sleep", "301"}
	require.True(t, Owned(mine))
	require.False(t, Owned(notMine), "a different command line is not provably ours")
	notMine.Argv, notMine.StartTicks = mine.Argv, ticks+1
	require.False(t, Owned(notMine), "a different start time is another process")

	require.NoError(t, sf.Update(func(s *State) { s.Instance = "run-1"; s.Processes = []ProcRecord{notMine} }))
	sf.Close()
	sf, prev, err = OpenState(dir)
	require.NoError(t, err)
	require.Equal(t, "run-1", prev.Instance)
	log := slog.New(slog.DiscardHandler)
	require.Zero(t, ReapStale(prev, time.Second, log), "a process it cannot prove is its own is left alone")
	require.True(t, alive(ours.Process.Pid))

	prev.Processes = []ProcRecord{mine}
	require.Equal(t, 1, ReapStale(prev, time.Second, log))
	require.Eventually(t, func() bool { return !alive(ours.Process.Pid) }, 5*time.Second, 10*time.Millisecond)
	sf.Close()
}
