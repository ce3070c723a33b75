package ollamapool

import (
	"flag"
	"fmt"
	"time"

	"github.com/sollol/mesh/services/ollamapool/internal/balance"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Config is the Ollama pool's configuration.
type Config struct {
	// GRPC is where the service listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`
	// Strategy chooses among eligible nodes: scored (default), round-robin, least-loaded,
	// latency.
	Strategy string `yaml:"strategy"`
	// MaxInFlightPerNode is a node's capacity when it reports none; beyond it requests
	// queue in the pool (by priority) instead of in Ollama (first come, first served).
	MaxInFlightPerNode int `yaml:"max_in_flight_per_node"`
	// MaxAttempts bounds the nodes one request tries before its first token.
	MaxAttempts int `yaml:"max_attempts"`
	// QueueSize bounds requests waiting for a saturated pool; beyond it RESOURCE_EXHAUSTED.
	QueueSize int `yaml:"queue_size"`
	// Timeouts of one request to one node.
	ConnectTimeout    time.Duration `yaml:"connect_timeout"`
	FirstTokenTimeout time.Duration `yaml:"first_token_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	// Breaker thresholds.
	BreakerFailures    int           `yaml:"breaker_failures"`
	BreakerCooldown    time.Duration `yaml:"breaker_cooldown"`
	BreakerMaxCooldown time.Duration `yaml:"breaker_max_cooldown"`
	BusyCooldown       time.Duration `yaml:"busy_cooldown"`
	// WarmModels are loaded on WarmNodes nodes each at start.
	WarmModels config.StringList `yaml:"warm_models"`
	WarmNodes  int               `yaml:"warm_nodes"`
}

// RegisterFlags declares the pool's flags, all prefixed "ollamapool.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50062")
	p := Name + "."
	fs.StringVar(&c.Strategy, p+"strategy", string(balance.Scored), "node choice: scored, round-robin, least-loaded or latency")
	fs.IntVar(&c.MaxInFlightPerNode, p+"max-in-flight-per-node", 4, "requests a node runs at once unless it reports its own capacity")
	fs.IntVar(&c.MaxAttempts, p+"max-attempts", 3, "nodes one request may try before its first token")
	fs.IntVar(&c.QueueSize, p+"queue-size", 256, "requests that may wait for a saturated pool")
	fs.DurationVar(&c.ConnectTimeout, p+"connect-timeout", 3*time.Second, "timeout to connect to a node")
	fs.DurationVar(&c.FirstTokenTimeout, p+"first-token-timeout", 2*time.Minute, "timeout for the first token, model load included")
	fs.DurationVar(&c.IdleTimeout, p+"idle-timeout", 30*time.Second, "longest silence between two tokens")
	fs.IntVar(&c.BreakerFailures, p+"breaker-failures", 3, "consecutive node faults that open its circuit")
	fs.DurationVar(&c.BreakerCooldown, p+"breaker-cooldown", 5*time.Second, "how long an open circuit waits before a trial request")
	fs.DurationVar(&c.BreakerMaxCooldown, p+"breaker-max-cooldown", time.Minute, "longest cooldown after repeated failed trials")
	fs.DurationVar(&c.BusyCooldown, p+"busy-cooldown", 500*time.Millisecond, "how long a node that answered busy (503/429) gets no new request")
	fs.Var(&c.WarmModels, p+"warm-models", "models to load at start (comma-separated)")
	fs.IntVar(&c.WarmNodes, p+"warm-nodes", 1, "nodes each warm model is loaded on")
}

func (c *Config) validate() (balance.Strategy, error) {
	st, err := balance.ParseStrategy(c.Strategy)
	if err != nil {
		return "", fmt.Errorf("ollamapool.strategy: %w", err)
	}
	for name, v := range map[string]int{"max-in-flight-per-node": c.MaxInFlightPerNode, "max-attempts": c.MaxAttempts, "breaker-failures": c.BreakerFailures} {
		if v < 1 {
			return "", fmt.Errorf("ollamapool.%s: must be at least 1, got %d", name, v)
		}
	}
	if c.QueueSize < 0 {
		return "", fmt.Errorf("ollamapool.queue-size: must not be negative, got %d", c.QueueSize)
	}
	for name, d := range map[string]time.Duration{"connect-timeout": c.ConnectTimeout, "first-token-timeout": c.FirstTokenTimeout, "idle-timeout": c.IdleTimeout, "breaker-cooldown": c.BreakerCooldown, "busy-cooldown": c.BusyCooldown} {
		if d <= 0 {
			return "", fmt.Errorf("ollamapool.%s: must be positive, got %s", name, d)
		}
	}
	return st, nil
}

func (c *Config) timeouts() ollama.Timeouts {
	return ollama.Timeouts{Connect: c.ConnectTimeout, FirstToken: c.FirstTokenTimeout, Idle: c.IdleTimeout}
}

func (c *Config) breaker() balance.BreakerPolicy {
	return balance.BreakerPolicy{
		FailureThreshold: c.BreakerFailures,
		Cooldown:         c.BreakerCooldown,
		MaxCooldown:      max(c.BreakerMaxCooldown, c.BreakerCooldown),
		BusyCooldown:     c.BusyCooldown,
	}
}
