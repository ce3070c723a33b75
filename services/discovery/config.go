package discovery

import (
	"flag"
	"fmt"
	"strconv"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
	"github.com/sollol/mesh/services/discovery/internal/sources"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Config is discovery's configuration. Every source is off unless configured, except the
// localhost defaults that `sollol up` turns on.
type Config struct {
	// GRPC is where the service listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`

	// OllamaNodes are Ollama servers to watch: host, host:port or http://host:port
	// (OLLAMA_HOST's forms). They are listed even while down, so a typo shows.
	OllamaNodes config.StringList `yaml:"ollama_nodes"`
	// RPCBackends are llama.cpp rpc-servers, host[:port], comma-separated as in SOLLOL's
	// RPC_BACKENDS.
	RPCBackends config.StringList `yaml:"rpc_backends"`
	// LocalDefaults adds 127.0.0.1:11434 (Ollama) and 127.0.0.1:50052 (rpc-server) as
	// candidates that are listed only once they answer.
	LocalDefaults bool `yaml:"local_defaults"`

	// DNSNames are kind=name[:port] entries re-resolved every DNSInterval.
	DNSNames    config.StringList `yaml:"dns_names"`
	DNSInterval time.Duration     `yaml:"dns_interval"`

	// Scan is the opt-in CIDR scan.
	Scan ScanConfig `yaml:"scan"`

	// ProbeInterval is how often a healthy backend is probed; down ones back off to
	// MaxProbeInterval.
	ProbeInterval    time.Duration `yaml:"probe_interval"`
	MaxProbeInterval time.Duration `yaml:"max_probe_interval"`
	// ProbeTimeout bounds one probe.
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
	// ProbeConcurrency bounds probes in flight.
	ProbeConcurrency int `yaml:"probe_concurrency"`
	// DownAfter consecutive failures mark a backend down; UpAfter successes bring it back.
	DownAfter int `yaml:"down_after"`
	UpAfter   int `yaml:"up_after"`
	// ForgetAfter removes a backend found by DNS, scan or the local defaults once it has been
	// down or gone from its source this long.
	ForgetAfter time.Duration `yaml:"forget_after"`
	// LeaseTTL is the TTL of the lease discovery writes backends under: if discovery dies,
	// its entries vanish this long after.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// RegistrationMaxTTL caps the TTL a self-registering node agent may ask for.
	RegistrationMaxTTL time.Duration `yaml:"registration_max_ttl"`
}

// ScanConfig is the opt-in CIDR scan.
type ScanConfig struct {
	CIDRs       config.StringList `yaml:"cidrs"`
	OllamaPorts config.StringList `yaml:"ollama_ports"`
	RPCPorts    config.StringList `yaml:"rpc_ports"`
	Interval    time.Duration     `yaml:"interval"`
	Concurrency int               `yaml:"concurrency"`
	PerSecond   int               `yaml:"per_second"`
	DialTimeout time.Duration     `yaml:"dial_timeout"`
	// AllowPublic permits scanning ranges that are not private, loopback or link-local.
	AllowPublic bool `yaml:"allow_public"`
}

// RegisterFlags declares discovery's flags, all prefixed "discovery.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50061")
	p := Name + "."
	fs.Var(&c.OllamaNodes, p+"ollama-nodes", "Ollama servers: host, host:port or http://host:port, comma-separated")
	fs.Var(&c.RPCBackends, p+"rpc-backends", "llama.cpp rpc-servers: host[:port], comma-separated (SOLLOL's RPC_BACKENDS form)")
	fs.BoolVar(&c.LocalDefaults, p+"local-defaults", false, "also try 127.0.0.1:11434 and 127.0.0.1:50052, listed once they answer (on under `sollol up`)")
	fs.Var(&c.DNSNames, p+"dns-names", "names resolving to several backends: ollama=name[:port] or rpc=name[:port], comma-separated")
	fs.DurationVar(&c.DNSInterval, p+"dns-interval", 15*time.Second, "how often DNS names are resolved again")
	c.Scan.OllamaPorts = config.StringList{strconv.Itoa(sources.OllamaPort)}
	c.Scan.RPCPorts = config.StringList{strconv.Itoa(sources.RPCPort)}
	fs.Var(&c.Scan.CIDRs, p+"scan-cidrs", "opt-in scan of private ranges, e.g. 192.168.1.0/24 (comma-separated)")
	fs.Var(&c.Scan.OllamaPorts, p+"scan-ollama-ports", "ports the scan tries for Ollama")
	fs.Var(&c.Scan.RPCPorts, p+"scan-rpc-ports", "ports the scan tries for rpc-servers")
	fs.DurationVar(&c.Scan.Interval, p+"scan-interval", 5*time.Minute, "how often the scan runs again")
	fs.IntVar(&c.Scan.Concurrency, p+"scan-concurrency", 16, "connection attempts in flight during a scan")
	fs.IntVar(&c.Scan.PerSecond, p+"scan-per-second", 200, "connection attempts per second during a scan")
	fs.DurationVar(&c.Scan.DialTimeout, p+"scan-dial-timeout", 500*time.Millisecond, "timeout of one scan connection attempt")
	fs.BoolVar(&c.Scan.AllowPublic, p+"scan-allow-public", false, "allow scanning ranges that are not private (never needed on a home or lab network)")
	fs.DurationVar(&c.ProbeInterval, p+"probe-interval", 2*time.Second, "probe interval of a healthy backend")
	fs.DurationVar(&c.MaxProbeInterval, p+"max-probe-interval", 30*time.Second, "longest probe interval of a down backend")
	fs.DurationVar(&c.ProbeTimeout, p+"probe-timeout", 2*time.Second, "timeout of one probe")
	fs.IntVar(&c.ProbeConcurrency, p+"probe-concurrency", 32, "probes in flight at once")
	fs.IntVar(&c.DownAfter, p+"down-after", 2, "consecutive failed probes that mark a backend down")
	fs.IntVar(&c.UpAfter, p+"up-after", 1, "consecutive good probes that bring a down backend back")
	fs.DurationVar(&c.ForgetAfter, p+"forget-after", 5*time.Minute, "drop a DNS-, scan- or default-found backend after it is gone this long")
	fs.DurationVar(&c.LeaseTTL, p+"lease-ttl", 10*time.Second, "TTL of the lease backends are written under")
	fs.DurationVar(&c.RegistrationMaxTTL, p+"registration-max-ttl", 5*time.Minute, "longest TTL a self-registering node may ask for")
}

// plan is the validated form of Config: parsed candidates, names and scan ranges.
type plan struct {
	static   []sources.Candidate
	dnsNames []sources.DNSName
	scan     *sources.ScanPlan
	policy   health.Policy
}

// validate parses every address and range in the configuration; errors name the flag.
func (c *Config) validate() (*plan, error) {
	p := &plan{policy: health.Policy{
		DownAfter:     max(c.DownAfter, 1),
		UpAfter:       max(c.UpAfter, 1),
		Interval:      c.ProbeInterval,
		MaxInterval:   max(c.MaxProbeInterval, c.ProbeInterval),
		LatencyWeight: 0.3,
	}}
	if c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 {
		return nil, fmt.Errorf("discovery.probe-interval and discovery.probe-timeout must be positive")
	}
	ollama, err := sources.Static("discovery.ollama-nodes", commonv1.BackendKind_BACKEND_KIND_OLLAMA, c.OllamaNodes, sources.SourceStatic)
	if err != nil {
		return nil, err
	}
	rpc, err := sources.Static("discovery.rpc-backends", commonv1.BackendKind_BACKEND_KIND_RPC, c.RPCBackends, sources.SourceStatic)
	if err != nil {
		return nil, err
	}
	p.static = append(ollama, rpc...)
	if c.LocalDefaults {
		p.static = append(p.static,
			sources.Candidate{Kind: commonv1.BackendKind_BACKEND_KIND_OLLAMA, Address: "127.0.0.1:11434", Source: sources.SourceDefault},
			sources.Candidate{Kind: commonv1.BackendKind_BACKEND_KIND_RPC, Address: "127.0.0.1:50052", Source: sources.SourceDefault})
	}
	if p.dnsNames, err = sources.ParseDNSNames("discovery.dns-names", c.DNSNames); err != nil {
		return nil, err
	}
	if len(c.Scan.CIDRs) > 0 {
		prefixes, err := sources.ParsePrefixes("discovery.scan-cidrs", c.Scan.CIDRs, c.Scan.AllowPublic)
		if err != nil {
			return nil, err
		}
		ollamaPorts, err := parsePorts("discovery.scan-ollama-ports", c.Scan.OllamaPorts)
		if err != nil {
			return nil, err
		}
		rpcPorts, err := parsePorts("discovery.scan-rpc-ports", c.Scan.RPCPorts)
		if err != nil {
			return nil, err
		}
		p.scan = &sources.ScanPlan{
			Prefixes: prefixes,
			Ports: map[commonv1.BackendKind][]int{
				commonv1.BackendKind_BACKEND_KIND_OLLAMA: ollamaPorts,
				commonv1.BackendKind_BACKEND_KIND_RPC:    rpcPorts,
			},
			Concurrency: c.Scan.Concurrency,
			PerSecond:   c.Scan.PerSecond,
			DialTimeout: c.Scan.DialTimeout,
		}
	}
	return p, nil
}

func parsePorts(field string, list []string) ([]int, error) {
	var out []int
	for _, s := range list {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%s: %q is not a port (1-65535)", field, s)
		}
		out = append(out, n)
	}
	return out, nil
}
