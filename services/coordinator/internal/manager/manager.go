// Package manager keeps llama-server coordinators: one per model across every goroutine and
// every manager replica (an etcd lock per model), started on demand with load progress for
// everybody waiting, cached within a memory budget (least recently used evicted after its
// requests drained, idle ones stopped), restarted with backoff after a crash, and rebuilt on
// the remaining rpc backends when one is lost.
//
// rpc-servers serve one client at a time, so a backend belongs to at most one coordinator:
// placement only uses backends no other coordinator (of this replica or another) holds.
package manager

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/llamaproc"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/coordinator/internal/relay"
	"github.com/sollol/mesh/services/shared/modelstore"
	"github.com/sollol/mesh/services/shared/registry"
)

// Config is what the manager needs; the service builds it from its flags.
type Config struct {
	// Binary is llama-server; ExtraArgs are appended to its command line.
	Binary    string
	ExtraArgs []string
	// Host is where llama-server listens; AdvertiseHost is the host put in the coordinator's
	// published address (defaults to Host).
	Host, AdvertiseHost string
	// GPULayers (-ngl) and Threads (-t, 0 = not passed).
	GPULayers, Threads int
	// DefaultContext is the context per slot when a request names none (capped at the
	// model's trained context); Parallel is the number of slots.
	DefaultContext, Parallel uint32
	// Budget bounds the estimated memory of cached coordinators; 0 = only the backends'.
	Budget uint64
	// IdleTTL stops a coordinator unused this long; 0 never.
	IdleTTL time.Duration
	// DrainTimeout bounds how long an evicted coordinator waits for its requests.
	DrainTimeout time.Duration
	// HealthTimeout plus HealthPerGiB per GiB of model bounds a start.
	HealthTimeout, HealthPerGiB time.Duration
	// StopTimeout is the wait between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// RestartBackoff doubles up to RestartBackoffMax between restarts; MaxRestarts failed
	// restarts in a row give up (the next request tries again).
	RestartBackoff, RestartBackoffMax time.Duration
	MaxRestarts                       int
	// LeaseTTL is the TTL of the etcd lease behind ownership locks and records.
	LeaseTTL time.Duration
	// DataDir holds the state file and llama-server logs.
	DataDir string
	// KillWithManager has the kernel kill coordinators when the manager dies.
	KillWithManager bool
	// Resolver finds models' GGUF files.
	Resolver *modelstore.Resolver
	// ShowText puts prompt text into error details and logs (debug).
	ShowText bool
	// QueueSize bounds the requests waiting for one coordinator's busy slots.
	QueueSize int
}

// Manager runs the coordinators of one replica.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	etcd     *clientv3.Client
	instance string
	address  atomic.Pointer[string]

	inspector placement.Inspector
	launcher  *llamaproc.Launcher
	state     *llamaproc.StateFile
	http      *http.Client
	relay     *relay.Client

	backends *registry.Snapshot[*commonv1.Backend]
	recStore *registry.Store[*coordinatorv1.Coordinator]
	records  *registry.Snapshot[*coordinatorv1.Coordinator]
	pub      *registry.Publisher[*coordinatorv1.Coordinator]
	owner    *ownership

	placeMu sync.Mutex

	mu       sync.Mutex
	entries  map[string]*entry
	changed  chan struct{}
	suspects map[string]time.Time
	closing  bool

	stats stats

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// New builds a stopped manager.
func New(cfg Config, etcd *clientv3.Client, log *slog.Logger) *Manager {
	m := &Manager{
		cfg:      cfg,
		log:      log,
		etcd:     etcd,
		instance: newInstanceID(),
		http:     relay.NewHTTPClient(),
		entries:  map[string]*entry{},
		changed:  make(chan struct{}),
		suspects: map[string]time.Time{},
	}
	m.relay = &relay.Client{HTTP: m.http, ShowText: cfg.ShowText, Log: log}
	m.address.Store(new(string))
	m.backends = registry.NewSnapshot(registry.NewStore(etcd, registry.BackendsPrefix,
		registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} })), log)
	m.recStore = registry.NewStore(etcd, registry.CoordinatorsPrefix,
		registry.ProtoJSON(func() *coordinatorv1.Coordinator { return &coordinatorv1.Coordinator{} }))
	m.records = registry.NewSnapshot(m.recStore, log)
	m.pub = registry.NewPublisher(m.recStore, cfg.LeaseTTL, log)
	return m
}

func newInstanceID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Instance is this replica's id in coordinator records.
func (m *Manager) Instance() string { return m.instance }

// Relay is the client that streams from the coordinators.
func (m *Manager) Relay() *relay.Client { return m.relay }

// SetAddress sets the gRPC address other replicas forward this replica's models to; call it
// once the server listens, before any coordinator starts.
func (m *Manager) SetAddress(addr string) { m.address.Store(&addr) }

// Start takes the data folder, stops what a previous run left behind (processes and etcd
// records), and begins mirroring backends and coordinator records from etcd.
func (m *Manager) Start(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(m.cfg.DataDir, "logs"), 0o755); err != nil {
		return fmt.Errorf("coordinator data folder: %w", err)
	}
	sf, prev, err := llamaproc.OpenState(m.cfg.DataDir)
	if err != nil {
		return err
	}
	m.state = sf
	if n := llamaproc.ReapStale(prev, m.cfg.StopTimeout, m.log); n > 0 {
		m.log.Warn("stopped llama-servers left by a previous run", "count", n)
	}
	if err := m.state.Update(func(s *llamaproc.State) { *s = llamaproc.State{Instance: m.instance} }); err != nil {
		m.state.Close()
		return err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.owner = newOwnership(m)
	steps := []func(context.Context) error{m.backends.Start, m.records.Start, m.pub.Start}
	for i, start := range steps {
		if err := start(ctx); err != nil {
			m.stopBackground(i)
			return err
		}
	}
	m.forgetPrevious(ctx, prev)
	m.launcher = llamaproc.NewLauncher(m.cfg.KillWithManager)
	m.wg.Add(1)
	go m.janitor()
	return nil
}

// stopBackground stops the first n started parts of Start, in reverse.
func (m *Manager) stopBackground(n int) {
	m.cancel()
	stops := []func(){m.backends.Stop, m.records.Stop, m.pub.Stop}
	for i := n - 1; i >= 0; i-- {
		stops[i]()
	}
	m.state.Close()
}

// Stop stops every coordinator (immediately: the gRPC server has already drained its
// requests), withdraws the records and locks, and releases the data folder.
func (m *Manager) Stop() {
	if m.launcher == nil {
		return // never started
	}
	m.stopOnce.Do(m.stop)
}

func (m *Manager) stop() {
	m.mu.Lock()
	m.closing = true
	for _, e := range m.entries {
		m.requestStopLocked(e, false, false, "the manager is shutting down")
	}
	m.bumpLocked()
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.launcher.Close()
	m.owner.close()
	m.stopBackground(3)
	m.http.CloseIdleConnections()
}

// bumpLocked wakes everybody waiting for a change.
func (m *Manager) bumpLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// recordKey is the etcd id of a model's record and lock; names may hold '/' and ':'.
func recordKey(model string) string { return url.PathEscape(model) }
