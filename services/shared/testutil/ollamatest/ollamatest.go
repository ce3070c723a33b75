// Package ollamatest runs a real Ollama server in tests.
//
// The binary is built by scripts/build-ollama.sh. Tests that use it skip when
// it is missing, unless SOLLOL_REQUIRE_OLLAMA=1 or CI=true, where they fail.
//
//	srv := ollamatest.Start(t, ollamatest.WithNumParallel(2))
//	srv.CreateTinyModel(t, "tiny")
//	resp, err := http.Post(srv.URL()+"/api/generate", ...)
//
// Each server listens on its own free 127.0.0.1 port with its own models and
// home folders under t.TempDir(), runs in its own process group (so the model
// runners it spawns go with it), and is stopped by t.Cleanup, which also
// checks that no process of the group survives. Should the test process die
// without cleaning up (a -timeout panic, SIGKILL), a small watchdog process
// kills the group. Several servers can run in one test.
//
// Ollama runs the tiny model (tinymodel) in its llama.cpp runner; with
// WithEnv("OLLAMA_NEW_ENGINE", "1") in its own Go engine.
package ollamatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sollol/mesh/services/shared/netutil"
)

// Version is the Ollama version that scripts/build-ollama.sh builds.
const Version = "0.17.4"

// Environment variables read by Binary.
const (
	EnvBinary  = "SOLLOL_OLLAMA_BIN"
	EnvRequire = "SOLLOL_REQUIRE_OLLAMA"
	EnvCache   = "SOLLOL_CACHE"
)

// DefaultBinaryPath is where scripts/build-ollama.sh puts the binary:
// ${SOLLOL_CACHE:-$HOME/.cache/sollol}/ollama/<Version>/bin/ollama.
func DefaultBinaryPath() string {
	root := os.Getenv(EnvCache)
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.Getenv("HOME")
		}
		root = filepath.Join(home, ".cache", "sollol")
	}
	return filepath.Join(root, "ollama", Version, "bin", "ollama")
}

// Required reports whether a missing binary must fail the test instead of
// skipping it: SOLLOL_REQUIRE_OLLAMA=1 or CI=true.
func Required() bool {
	return os.Getenv(EnvRequire) == "1" || os.Getenv("CI") == "true"
}

// Binary returns the path of the Ollama binary: $SOLLOL_OLLAMA_BIN, else
// DefaultBinaryPath. When there is none it skips the test, or fails it when
// Required.
func Binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(EnvBinary)
	from := EnvBinary
	if p == "" {
		p, from = DefaultBinaryPath(), "default path"
	}
	st, err := os.Stat(p)
	if err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return p
	}
	msg := fmt.Sprintf("ollama binary not found at %s (%s): run scripts/build-ollama.sh, or set %s", p, from, EnvBinary)
	if Required() {
		t.Fatalf("%s (required because %s=1 or CI=true)", msg, EnvRequire)
	}
	t.Skip(msg)
	return ""
}

// Option configures Start.
type Option func(*config)

type config struct {
	env          map[string]string
	binary       string
	startTimeout time.Duration
	stopTimeout  time.Duration
}

// WithEnv sets an environment variable of the server (OLLAMA_HOST,
// OLLAMA_MODELS and HOME are set by Start and cannot be overridden).
func WithEnv(key, value string) Option {
	return func(c *config) { c.env[key] = value }
}

// WithNumParallel sets OLLAMA_NUM_PARALLEL (parallel requests per model).
func WithNumParallel(n int) Option { return WithEnv("OLLAMA_NUM_PARALLEL", strconv.Itoa(n)) }

// WithMaxQueue sets OLLAMA_MAX_QUEUE (queued requests before 503).
func WithMaxQueue(n int) Option { return WithEnv("OLLAMA_MAX_QUEUE", strconv.Itoa(n)) }

// WithKeepAlive sets OLLAMA_KEEP_ALIVE, e.g. "5m", "0" or "-1".
func WithKeepAlive(v string) Option { return WithEnv("OLLAMA_KEEP_ALIVE", v) }

// WithMaxLoadedModels sets OLLAMA_MAX_LOADED_MODELS.
func WithMaxLoadedModels(n int) Option { return WithEnv("OLLAMA_MAX_LOADED_MODELS", strconv.Itoa(n)) }

// WithDebug sets OLLAMA_DEBUG=1 for a verbose log.
func WithDebug() Option { return WithEnv("OLLAMA_DEBUG", "1") }

// WithBinary uses the given binary instead of Binary(t).
func WithBinary(path string) Option { return func(c *config) { c.binary = path } }

// WithStartTimeout bounds the wait for /api/version to answer (default 30s).
func WithStartTimeout(d time.Duration) Option { return func(c *config) { c.startTimeout = d } }

// WithStopTimeout bounds the wait after SIGTERM before SIGKILL (default 10s).
func WithStopTimeout(d time.Duration) Option { return func(c *config) { c.stopTimeout = d } }

// Server is a running `ollama serve`.
type Server struct {
	t       testing.TB
	addr    string
	dir     string
	logPath string
	cmd     *exec.Cmd
	pgid    int
	exited  chan struct{} // closed when the leader has been reaped
	waitErr error
	client  *http.Client
	cfg     config

	// The watchdog kills the group should the test process die without
	// cleaning up (a -timeout panic, a crash, SIGKILL): it waits for EOF on
	// a pipe whose write end only this process holds.
	watchdog     *exec.Cmd
	watchdogPipe *os.File

	stopOnce sync.Once
}

// Start starts `ollama serve` and waits until it answers. It registers a
// cleanup that stops it and checks that its process group is gone, and that
// logs the server's output when the test failed.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := config{
		env:          map[string]string{},
		startTimeout: 30 * time.Second,
		stopTimeout:  10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.binary == "" {
		cfg.binary = Binary(t)
	}
	dir := t.TempDir()

	// The free port is found by binding and closing; another process can take
	// it in between, so retry a few times when the bind fails.
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		s, err := start(t, cfg, dir, attempt)
		if err == nil {
			return s
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("ollamatest: %v", lastErr)
	return nil
}

var errAddrInUse = errors.New("address already in use")

func start(t testing.TB, cfg config, dir string, attempt int) (*Server, error) {
	port, err := netutil.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	home := filepath.Join(dir, "home")
	models := filepath.Join(dir, "models")
	for _, d := range []string{home, models} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(dir, fmt.Sprintf("ollama-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(cfg.binary, "serve")
	cmd.Dir = dir
	cmd.Env = environ(cfg.env, map[string]string{
		"OLLAMA_HOST":   addr,
		"OLLAMA_MODELS": models,
		"HOME":          home,
	})
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", cfg.binary, err)
	}
	s := &Server{
		t:       t,
		addr:    addr,
		dir:     dir,
		logPath: logPath,
		cmd:     cmd,
		pgid:    cmd.Process.Pid, // Setpgid: the leader's pid is the group id
		exited:  make(chan struct{}),
		client:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		cfg:     cfg,
	}
	s.startWatchdog()
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	// LIFO: the log is dumped after the server has been stopped.
	t.Cleanup(s.dumpLogOnFailure)
	t.Cleanup(s.Stop)

	if err := s.waitReady(cfg.startTimeout); err != nil {
		s.Stop()
		log, _ := os.ReadFile(logPath)
		if strings.Contains(string(log), "address already in use") {
			return nil, fmt.Errorf("%s: %w", addr, errAddrInUse)
		}
		return nil, fmt.Errorf("ollama serve on %s: %w\n%s", addr, err, tail(log, 8<<10))
	}
	return s, nil
}

// environ returns the test's environment without any OLLAMA_* variable or
// HOME, plus extra, plus fixed (which wins).
func environ(extra, fixed map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OLLAMA_") || k == "HOME" {
			continue
		}
		if _, ok := extra[k]; ok {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		if _, ok := fixed[k]; !ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range fixed {
		env = append(env, k+"="+v)
	}
	return env
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := 10 * time.Millisecond
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("exited before it was ready: %v", s.waitErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/api/version", nil)
		resp, err := s.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /api/version: %s", resp.Status)
		}
		cancel()
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v", timeout, err)
		}
		time.Sleep(tick)
		tick = min(2*tick, 200*time.Millisecond)
	}
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return "http://" + s.addr }

// Addr is the server's host:port, as for OLLAMA_HOST.
func (s *Server) Addr() string { return s.addr }

// Dir is the server's temporary folder (models, home, log).
func (s *Server) Dir() string { return s.dir }

// LogPath is the file that receives the server's output.
func (s *Server) LogPath() string { return s.logPath }

// PID is the process id of `ollama serve`, which is also its process group id.
func (s *Server) PID() int { return s.pgid }

// Client is an HTTP client for the server; its idle connections are closed
// when the server stops.
func (s *Server) Client() *http.Client { return s.client }

// Processes returns the live (non-zombie) processes of the server's process
// group: the server and any model runners it started.
func (s *Server) Processes() []int { return groupMembers(s.pgid) }

// Exited is closed when the server process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Stop stops the server: SIGTERM to `ollama serve` (which then kills and
// reaps its runners), a bounded wait, then SIGKILL to whatever is left of the
// process group. It fails the test when a process of the group survives.
// Safe to call more than once, and after Kill.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		defer s.client.CloseIdleConnections()
		s.stopWatchdog()
		// Not the whole group: a runner that exits before its parent has
		// reaped it stays a zombie where init does not reap orphans.
		_ = syscall.Kill(s.pgid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(s.cfg.stopTimeout):
			s.t.Logf("ollamatest: ollama (pid %d) did not exit %v after SIGTERM; killing", s.pgid, s.cfg.stopTimeout)
		}
		s.reapGroup()
	})
}

// Kill sends SIGKILL to the whole process group at once, as a crash would,
// and waits for the server to exit. Stop (and the cleanup) still verify that
// the group is gone.
func (s *Server) Kill() {
	_ = syscall.Kill(-s.pgid, syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("ollamatest: ollama (pid %d) still running 10s after SIGKILL", s.pgid)
	}
	s.Stop()
}

// startWatchdog starts `sh -c 'read; kill -KILL -PGID'` in a process group
// of its own, reading from a pipe. Pdeathsig alone is not enough: it covers
// `ollama serve` but not the runners it starts, which survive their parent.
func (s *Server) startWatchdog() {
	r, w, err := os.Pipe()
	if err != nil {
		s.t.Logf("ollamatest: no watchdog: %v", err)
		return
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", `read -r _; kill -s KILL -- "-$1"`, "ollamatest-watchdog", strconv.Itoa(s.pgid))
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		s.t.Logf("ollamatest: no watchdog: %v", err)
		return
	}
	s.watchdog, s.watchdogPipe = cmd, w
}

// stopWatchdog disarms the watchdog: it is killed before its pipe closes.
func (s *Server) stopWatchdog() {
	if s.watchdog == nil {
		return
	}
	_ = s.watchdog.Process.Kill()
	_ = s.watchdog.Wait()
	_ = s.watchdogPipe.Close()
}

// reapGroup kills what is left of the group and waits, bounded, until no
// live process of it remains.
func (s *Server) reapGroup() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		members := groupMembers(s.pgid)
		select {
		case <-s.exited:
			if len(members) == 0 {
				return
			}
		default:
		}
		if time.Now().After(deadline) {
			s.t.Errorf("ollamatest: processes of ollama's group %d survive SIGKILL: %v", s.pgid, members)
			return
		}
		// Only while the group still has members: its id cannot have been
		// reused by another group then.
		if len(members) > 0 {
			_ = syscall.Kill(-s.pgid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) dumpLogOnFailure() {
	if !s.t.Failed() {
		return
	}
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		s.t.Logf("ollamatest: reading %s: %v", s.logPath, err)
		return
	}
	s.t.Logf("ollamatest: log of ollama on %s (%s):\n%s", s.addr, s.logPath, tail(b, 64<<10))
}

// Log returns the server's output so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func tail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return "[...]\n" + string(b[len(b)-n:])
}
