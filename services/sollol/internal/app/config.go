package app

import (
	"flag"
	"os"
	"path/filepath"
	"time"

	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/router"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/httpserver"
	"github.com/sollol/mesh/services/shared/logging"
)

// Config is the whole process's configuration: one section per service plus what they share.
type Config struct {
	Log  logging.Config    `yaml:"log"`
	Etcd EtcdConfig        `yaml:"etcd"`
	HTTP httpserver.Config `yaml:"http"`
	// DataDir holds local state: the embedded etcd's data under `sollol up`.
	DataDir string `yaml:"data_dir"`
	// ShutdownTimeout bounds the whole stop after SIGTERM; services drain within it.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP listener. Off by default:
	// profiles reveal internals and cost CPU while taken.
	Pprof bool `yaml:"pprof"`

	Discovery   discovery.Config   `yaml:"discovery"`
	Coordinator coordinator.Config `yaml:"coordinator"`
	OllamaPool  ollamapool.Config  `yaml:"ollamapool"`
	Router      router.Config      `yaml:"router"`

	printConfig bool
	// up is set for `sollol up`, whose defaults differ: discovery also tries localhost.
	up bool
}

// EtcdConfig says which etcd the process uses.
type EtcdConfig struct {
	// Endpoints of an external cluster. Empty: `sollol up` embeds one; a single target uses
	// 127.0.0.1:2379.
	Endpoints config.StringList `yaml:"endpoints"`
	// DialTimeout bounds the check at start that etcd answers.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// EmbedClientAddr and EmbedPeerAddr are where the embedded etcd listens.
	EmbedClientAddr string `yaml:"embed_client_addr"`
	EmbedPeerAddr   string `yaml:"embed_peer_addr"`
}

// defaultEtcdEndpoint is where a single target looks for etcd when none is configured.
const defaultEtcdEndpoint = "127.0.0.1:2379"

// RegisterFlags declares every flag of the process.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Log.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs)
	fs.Var(&c.Etcd.Endpoints, "etcd-endpoints", "comma-separated etcd endpoints (empty: `sollol up` embeds etcd, a single target uses "+defaultEtcdEndpoint+")")
	fs.DurationVar(&c.Etcd.DialTimeout, "etcd-dial-timeout", 5*time.Second, "how long to wait at start for etcd to answer")
	fs.StringVar(&c.Etcd.EmbedClientAddr, "etcd.embed-client-addr", "127.0.0.1:2379", "client address of the embedded etcd (sollol up)")
	fs.StringVar(&c.Etcd.EmbedPeerAddr, "etcd.embed-peer-addr", "127.0.0.1:2380", "peer address of the embedded etcd (sollol up)")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "local state, e.g. the embedded etcd's data")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "upper bound on a graceful stop")
	fs.BoolVar(&c.printConfig, "print-config", false, "print the effective configuration as YAML and exit")
	fs.BoolVar(&c.Pprof, "debug.pprof", false, "serve Go's profiler under /debug/pprof/ on the HTTP address")
	c.Discovery.RegisterFlags(fs)
	if c.up {
		// `sollol up` is the newcomer's one command: a local Ollama or rpc-server on its
		// default port is found without configuration (and listed only once it answers).
		c.Discovery.LocalDefaults = true
		fs.Lookup("discovery.local-defaults").DefValue = "true"
	}
	c.Coordinator.RegisterFlags(fs)
	c.OllamaPool.RegisterFlags(fs)
	c.Router.RegisterFlags(fs)
}

func defaultDataDir() string {
	if dir, err := os.UserHomeDir(); err == nil {
		return filepath.Join(dir, ".local", "share", "sollol")
	}
	return "sollol-data"
}
