package app

import (
	"github.com/sollol/mesh/services/router"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

func routerTarget() target {
	return target{name: router.Name, build: func(p *process) (lifecycle.Service, error) {
		svc, err := router.New(p.cfg.Router, p.deps())
		if err != nil {
			return nil, err
		}
		p.mux.Handle("/sollol/", svc.HTTPHandler())
		return svc, nil
	}}
}
