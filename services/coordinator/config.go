package coordinator

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sollol/mesh/services/coordinator/internal/manager"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/modelstore"
)

// Config is the coordinator-manager's configuration.
type Config struct {
	// GRPC is where the service listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`

	// LlamaServer is the llama-server binary; LlamaServerArgs are appended to its command line.
	LlamaServer     string            `yaml:"llama_server"`
	LlamaServerArgs config.StringList `yaml:"llama_server_args"`
	// LlamaHost is where coordinators listen (llama-server has no authentication: keep it
	// on loopback or a trusted network); LlamaAdvertiseHost is the host put in their
	// published address when other machines must reach them.
	LlamaHost          string `yaml:"llama_host"`
	LlamaAdvertiseHost string `yaml:"llama_advertise_host"`
	// GPULayers is -ngl; Threads is -t (0: llama-server's default).
	GPULayers int `yaml:"gpu_layers"`
	Threads   int `yaml:"threads"`
	// DefaultContext is the context per request when none is asked for (capped at the
	// model's); Parallel is the number of slots a coordinator serves at once.
	DefaultContext int `yaml:"default_context"`
	Parallel       int `yaml:"parallel"`

	// Models maps names to GGUF files (name=path); ModelDirs hold <name>.gguf files;
	// OllamaModels is an Ollama model store ("none" to disable).
	Models       config.StringList `yaml:"models"`
	ModelDirs    config.StringList `yaml:"model_dirs"`
	OllamaModels string            `yaml:"ollama_models"`

	// CacheBudget bounds the estimated memory of cached coordinators, e.g. "24GiB"; "0" means
	// only the rpc backends' free memory limits.
	CacheBudget string `yaml:"cache_budget"`
	// IdleTTL stops a coordinator unused this long (0: never).
	IdleTTL time.Duration `yaml:"idle_ttl"`
	// EvictDrainTimeout bounds how long an evicted coordinator waits for its requests.
	EvictDrainTimeout time.Duration `yaml:"evict_drain_timeout"`
	// StartTimeout plus StartTimeoutPerGiB per GiB of model bounds a start (until GET /health).
	StartTimeout       time.Duration `yaml:"start_timeout"`
	StartTimeoutPerGiB time.Duration `yaml:"start_timeout_per_gib"`
	// StopTimeout is the wait between SIGTERM and SIGKILL.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// RestartBackoff doubles up to RestartBackoffMax between restarts after crashes;
	// MaxRestarts failed restarts in a row give up until the next request.
	RestartBackoff    time.Duration `yaml:"restart_backoff"`
	RestartBackoffMax time.Duration `yaml:"restart_backoff_max"`
	MaxRestarts       int           `yaml:"max_restarts"`
	// LeaseTTL is the TTL of the etcd lease behind model ownership and records.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// DataDir holds the state file (to find processes a crashed run left) and llama-server
	// logs. Empty: <data-dir>/coordinator under sollol, else ~/.local/share/sollol/coordinator.
	DataDir string `yaml:"data_dir"`
	// Prewarm lists models started at boot.
	Prewarm config.StringList `yaml:"prewarm"`
	// KillWithManager has the kernel kill coordinators should the manager die.
	KillWithManager bool `yaml:"kill_with_manager"`
	// LogPromptText shows prompt text in logs and error details instead of its length.
	LogPromptText bool `yaml:"log_prompt_text"`
	// QueueSize bounds the requests waiting for one coordinator's busy slots.
	QueueSize int `yaml:"queue_size"`
}

// RegisterFlags declares the service's flags, all prefixed "coordinator.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50063")
	p := Name + "."
	fs.StringVar(&c.LlamaServer, p+"llama-server", "llama-server", "llama-server binary (name in PATH or path)")
	fs.Var(&c.LlamaServerArgs, p+"llama-server-args", "extra llama-server arguments, comma-separated")
	fs.StringVar(&c.LlamaHost, p+"llama-host", "127.0.0.1", "host coordinators listen on (llama-server is unauthenticated: keep it private)")
	fs.StringVar(&c.LlamaAdvertiseHost, p+"llama-advertise-host", "", "host in the coordinators' published address (default: llama-host)")
	fs.IntVar(&c.GPULayers, p+"gpu-layers", 99, "layers offloaded to the rpc backends (-ngl)")
	fs.IntVar(&c.Threads, p+"threads", 0, "llama-server threads (-t); 0 leaves llama-server's default")
	fs.IntVar(&c.DefaultContext, p+"default-context", 4096, "context per request when none is asked for, capped at the model's")
	fs.IntVar(&c.Parallel, p+"parallel", 4, "requests a coordinator serves at once (-np); the context is per request")
	fs.Var(&c.Models, p+"models", "model files: name=/path/model.gguf, comma-separated")
	fs.Var(&c.ModelDirs, p+"model-dirs", "folders of <name>.gguf files, comma-separated")
	fs.StringVar(&c.OllamaModels, p+"ollama-models", modelstore.DefaultOllamaRoot(os.Getenv), "Ollama model store (default $OLLAMA_MODELS or ~/.ollama/models; \"none\" disables)")
	fs.StringVar(&c.CacheBudget, p+"cache-budget", "0", "memory budget of cached coordinators, e.g. 24GiB; 0: only the backends' memory limits")
	fs.DurationVar(&c.IdleTTL, p+"idle-ttl", 15*time.Minute, "stop a coordinator unused this long (0: never)")
	fs.DurationVar(&c.EvictDrainTimeout, p+"evict-drain-timeout", 2*time.Minute, "how long an evicted coordinator waits for its requests")
	fs.DurationVar(&c.StartTimeout, p+"start-timeout", 2*time.Minute, "start deadline (until GET /health answers), plus start-timeout-per-gib")
	fs.DurationVar(&c.StartTimeoutPerGiB, p+"start-timeout-per-gib", time.Minute, "extra start time per GiB of model")
	fs.DurationVar(&c.StopTimeout, p+"stop-timeout", 10*time.Second, "wait between SIGTERM and SIGKILL")
	fs.DurationVar(&c.RestartBackoff, p+"restart-backoff", 500*time.Millisecond, "first wait before restarting a crashed coordinator")
	fs.DurationVar(&c.RestartBackoffMax, p+"restart-backoff-max", 30*time.Second, "longest wait between restarts")
	fs.IntVar(&c.MaxRestarts, p+"max-restarts", 5, "failed restarts in a row before giving up until the next request")
	fs.DurationVar(&c.LeaseTTL, p+"lease-ttl", 10*time.Second, "TTL of the etcd lease behind model ownership and records")
	fs.StringVar(&c.DataDir, p+"data-dir", "", "state file and llama-server logs (default <data-dir>/coordinator)")
	fs.Var(&c.Prewarm, p+"prewarm", "models to start at boot, comma-separated")
	fs.BoolVar(&c.KillWithManager, p+"kill-with-manager", true, "have the kernel kill coordinators if the manager dies")
	fs.BoolVar(&c.LogPromptText, p+"log-prompt-text", false, "show prompt text in logs and error details (debug)")
	fs.IntVar(&c.QueueSize, p+"queue-size", 256, "requests that may wait, by priority, for a coordinator whose slots are all busy")
}

// validate checks the configuration; errors name the flag.
func (c *Config) validate() (manager.Config, error) {
	p := "coordinator."
	if c.LlamaServer == "" {
		return manager.Config{}, fmt.Errorf("%sllama-server: required", p)
	}
	if c.LlamaHost == "" || strings.ContainsAny(c.LlamaHost, "/: ") && net.ParseIP(c.LlamaHost) == nil {
		return manager.Config{}, fmt.Errorf("%sllama-host: %q is not a host", p, c.LlamaHost)
	}
	for name, v := range map[string]int{"gpu-layers": c.GPULayers, "default-context": c.DefaultContext - 1, "parallel": c.Parallel - 1,
		"threads": c.Threads, "max-restarts": c.MaxRestarts, "queue-size": c.QueueSize} {
		if v < 0 {
			return manager.Config{}, fmt.Errorf("%s%s: must be positive", p, name)
		}
	}
	for name, d := range map[string]time.Duration{"start-timeout": c.StartTimeout, "stop-timeout": c.StopTimeout,
		"restart-backoff": c.RestartBackoff, "lease-ttl": c.LeaseTTL, "evict-drain-timeout": c.EvictDrainTimeout} {
		if d <= 0 {
			return manager.Config{}, fmt.Errorf("%s%s: must be a positive duration", p, name)
		}
	}
	budget, err := parseBytes(c.CacheBudget)
	if err != nil {
		return manager.Config{}, fmt.Errorf("%scache-budget: %w", p, err)
	}
	res := &modelstore.Resolver{Mapping: map[string]string{}, Dirs: c.ModelDirs}
	for _, m := range c.Models {
		name, path, ok := strings.Cut(m, "=")
		if !ok || strings.TrimSpace(name) == "" || strings.TrimSpace(path) == "" {
			return manager.Config{}, fmt.Errorf("%smodels: %q is not name=path", p, m)
		}
		res.Mapping[strings.TrimSpace(name)] = strings.TrimSpace(path)
	}
	if c.OllamaModels != "none" {
		res.OllamaRoot = c.OllamaModels
	}
	dataDir := c.DataDir
	if dataDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return manager.Config{}, fmt.Errorf("%sdata-dir: required (no home folder to default to)", p)
		}
		dataDir = filepath.Join(home, ".local", "share", "sollol", "coordinator")
	}
	return manager.Config{
		Binary: c.LlamaServer, ExtraArgs: c.LlamaServerArgs, Host: c.LlamaHost, AdvertiseHost: c.LlamaAdvertiseHost,
		GPULayers: c.GPULayers, Threads: c.Threads,
		DefaultContext: uint32(c.DefaultContext), Parallel: uint32(c.Parallel),
		Budget: budget, IdleTTL: c.IdleTTL, DrainTimeout: c.EvictDrainTimeout,
		HealthTimeout: c.StartTimeout, HealthPerGiB: c.StartTimeoutPerGiB, StopTimeout: c.StopTimeout,
		RestartBackoff: c.RestartBackoff, RestartBackoffMax: max(c.RestartBackoffMax, c.RestartBackoff), MaxRestarts: c.MaxRestarts,
		LeaseTTL: c.LeaseTTL, DataDir: dataDir, KillWithManager: c.KillWithManager, Resolver: res, ShowText: c.LogPromptText,
		QueueSize: c.QueueSize,
	}, nil
}

// parseBytes reads "0", "1048576", "512MiB", "24GiB", "1.5GB" (decimal and binary units).
func parseBytes(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size like 0, 512MiB or 24GiB", s)
	}
	return uint64(v * mult), nil
}
