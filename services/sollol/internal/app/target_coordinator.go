package app

import (
	"path/filepath"

	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

func coordinatorTarget() target {
	return target{name: coordinator.Name, aliases: []string{"coordinator-manager"}, build: func(p *process) (lifecycle.Service, error) {
		cfg := p.cfg.Coordinator
		if cfg.DataDir == "" {
			// The coordinator's state file and llama-server logs live with the process's
			// other local state.
			cfg.DataDir = filepath.Join(p.cfg.DataDir, "coordinator")
		}
		return coordinator.New(cfg, p.deps())
	}}
}
