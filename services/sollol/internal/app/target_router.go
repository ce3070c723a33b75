package app

import (
	"github.com/sollol/mesh/services/router"
	"github.com/sollol/mesh/services/router/httpapi"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

// routerTarget runs the router and mounts its HTTP APIs on the process's listener: the REST
// gateway under /sollol/, and the Ollama (/, /api/) and OpenAI (/v1/) APIs at "/". The
// process's /readyz, /healthz and /metrics are more specific patterns, so "/" does not
// shadow them.
func routerTarget() target {
	return target{name: router.Name, build: func(p *process) (lifecycle.Service, error) {
		svc, err := router.New(p.cfg.Router, p.deps())
		if err != nil {
			return nil, err
		}
		p.mux.Handle("/sollol/", svc.HTTPHandler())
		p.mux.Handle("/", httpapi.New(svc, httpapi.Options{
			MaxBodyBytes: p.cfg.Router.MaxBodyBytes,
			Logger:       p.log,
			Version:      Version,
		}))
		return svc, nil
	}}
}
