package app

import (
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

func coordinatorTarget() target {
	return target{name: coordinator.Name, aliases: []string{"coordinator-manager"}, build: func(p *process) (lifecycle.Service, error) {
		return coordinator.New(p.cfg.Coordinator, p.deps())
	}}
}
