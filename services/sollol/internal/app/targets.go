package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

// target is one service the binary can run. Each lives in its own target_<name>.go, so adding
// a service touches one small file, not a giant composition root.
type target struct {
	name    string
	aliases []string
	build   func(p *process) (lifecycle.Service, error)
}

// process is what every target of one process shares.
type process struct {
	cfg      *Config
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *grpcserver.Metrics
	etcd     *clientv3.Client
	// mux is the process's HTTP handler; the router mounts its APIs on it.
	mux *http.ServeMux
}

func (p *process) deps() grpcserver.Deps {
	return grpcserver.Deps{Logger: p.log, Metrics: p.metrics, Etcd: p.etcd, Registry: p.registry}
}

// allTargets lists the services in start order: discovery feeds etcd, the pool and the
// coordinator-manager read it, and the router, which calls both, comes last.
func allTargets() []target {
	return []target{discoveryTarget(), coordinatorTarget(), ollamaPoolTarget(), routerTarget()}
}

// upCommand runs every target plus an embedded etcd.
const upCommand = "up"

// selectTargets resolves the command word: "up", a target name or alias, or a comma-separated
// list of them. The result keeps the start order of allTargets.
func selectTargets(command string) ([]target, error) {
	all := allTargets()
	if command == upCommand {
		return all, nil
	}
	wanted := map[string]bool{}
	for _, word := range strings.Split(command, ",") {
		t, ok := findTarget(all, strings.TrimSpace(word))
		if !ok {
			return nil, fmt.Errorf("unknown target %q (valid: %s)", word, strings.Join(validWords(all), ", "))
		}
		wanted[t.name] = true
	}
	var out []target
	for _, t := range all {
		if wanted[t.name] {
			out = append(out, t)
		}
	}
	return out, nil
}

func findTarget(all []target, word string) (target, bool) {
	for _, t := range all {
		if t.name == word {
			return t, true
		}
		for _, a := range t.aliases {
			if a == word {
				return t, true
			}
		}
	}
	return target{}, false
}

func validWords(all []target) []string {
	words := []string{upCommand}
	for _, t := range all {
		words = append(words, t.name)
	}
	sort.Strings(words[1:])
	return words
}
