// Package app assembles the sollol binary: it parses the command line, builds the chosen
// targets over one shared etcd client, metrics registry and HTTP listener, runs them through
// the lifecycle manager and stops them in reverse order on SIGINT or SIGTERM.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/httpserver"
	"github.com/sollol/mesh/services/shared/lifecycle"
	"github.com/sollol/mesh/services/shared/logging"
	"github.com/sollol/mesh/services/sollol/internal/cli"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

const usage = `sollol — LLM inference across a fleet: an Ollama pool and llama.cpp RPC sharding.

Usage:
  sollol up [flags]            run every service and an embedded etcd in one process
  sollol <target>[,<target>] [flags]
                               run chosen services (targets: discovery, coordinator,
                               ollamapool, router) against --etcd-endpoints
  sollol chat -m MODEL "prompt" stream an answer through the router, with the route taken
  sollol backends              list the backends discovery found and verified
  sollol route -m MODEL        explain how a request would be routed, without running it
  sollol stats                 the router's counters and what it sees of each part
  sollol probe [URL]           exit 0 when this process's /readyz answers 200 (health checks)
  sollol version               print the version
  sollol <command> -h          list the flags (every flag also reads SOLLOL_<NAME>,
                               e.g. --router.grpc-addr from SOLLOL_ROUTER_GRPC_ADDR,
                               and a YAML file given with --config.file)
`

// Main runs the command line and returns the process exit code: 0 on a clean stop, 1 when a
// service fails, 2 for a usage error. Errors end in one line naming the problem.
func Main(args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, "sollol", Version)
		return 0
	}
	command := args[0]
	if c, ok := cli.Find(command); ok {
		return cli.Main(c, args[1:], &cli.Env{Stdout: stdout, Stderr: stderr, LookupEnv: lookupEnv})
	}
	targets, err := selectTargets(command)
	if err != nil {
		fmt.Fprintf(stderr, "sollol: %v\n", err)
		return 2
	}

	cfg := &Config{up: command == upCommand}
	fs := flag.NewFlagSet("sollol "+command, flag.ContinueOnError)
	if err := config.Load(fs, cfg, args[1:], lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "sollol %s: %v\n", command, err)
		return 2
	}
	if cfg.printConfig {
		if err := config.Print(stdout, cfg); err != nil {
			fmt.Fprintf(stderr, "sollol: print config: %v\n", err)
			return 1
		}
		return 0
	}
	log, err := logging.New(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sollol %s: %v\n", command, err)
		return 2
	}
	if err := run(command, targets, cfg, log); err != nil {
		fmt.Fprintf(stderr, "sollol %s: %v\n", command, err)
		return 1
	}
	return 0
}

// run builds the process, starts it, and blocks until a signal or a service failure.
func run(command string, targets []target, cfg *Config, log *slog.Logger) error {
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	etcd, err := newEtcdService(cfg, command == upCommand)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p := &process{
		cfg:      cfg,
		log:      log,
		registry: reg,
		metrics:  grpcserver.NewMetrics(reg),
		etcd:     etcd.client,
		mux:      http.NewServeMux(),
	}
	manager := lifecycle.NewManager(log)
	manager.Add(etcd)
	for _, t := range targets {
		svc, err := t.build(p)
		if err != nil {
			_ = etcd.client.Close()
			return fmt.Errorf("build %s: %w", t.name, err)
		}
		manager.Add(svc)
	}
	p.mux.Handle("GET /readyz", manager.ReadyzHandler())
	p.mux.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	}))
	p.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if cfg.Pprof {
		p.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		p.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		p.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	manager.Add(httpserver.New(cfg.HTTP, p.mux, log))

	if err := manager.Start(ctx); err != nil {
		return err
	}
	log.Info("sollol running", "command", command, "version", Version, "http", cfg.HTTP.Addr)

	var failure error
	select {
	case <-ctx.Done():
		log.Info("stopping on signal")
	case failure = <-manager.Failed():
		log.Error("stopping after a service failed", "err", failure)
	}
	stopSignals() // a second signal now kills the process the default way
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := manager.Stop(stopCtx); err != nil {
		return errors.Join(failure, err)
	}
	return failure
}
