package app

import (
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

func discoveryTarget() target {
	return target{name: discovery.Name, build: func(p *process) (lifecycle.Service, error) {
		return discovery.New(p.cfg.Discovery, p.deps())
	}}
}
