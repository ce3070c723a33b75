package app

import (
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

func ollamaPoolTarget() target {
	return target{name: ollamapool.Name, aliases: []string{"ollama-pool", "pool"}, build: func(p *process) (lifecycle.Service, error) {
		return ollamapool.New(p.cfg.OllamaPool, p.deps())
	}}
}
