package manager

import (
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
)

// maxCatalogue bounds the catalogue: a model folder with more files than this is listed in
// part (in name order) rather than answered with a message too large to send.
const maxCatalogue = 2000

// Catalogue sizes every model the resolver can find from its GGUF metadata. Each file is
// parsed once per version (the inspector caches by size and modification time), so asking
// often costs a directory listing and a stat per model.
func (m *Manager) Catalogue() []*coordinatorv1.ModelInfo {
	names := m.cfg.Resolver.List()
	names = names[:min(len(names), maxCatalogue)]
	out := make([]*coordinatorv1.ModelInfo, 0, len(names))
	for _, name := range names {
		info := &coordinatorv1.ModelInfo{Name: name}
		out = append(out, info)
		model, err := m.cfg.Resolver.Resolve(name)
		if err != nil {
			info.Error = err.Error()
			continue
		}
		info.Source, info.FileBytes = model.Source, uint64(max(model.Size, 0))
		gm, err := m.inspector.Inspect(model.Path)
		if err != nil {
			info.Error = err.Error()
			continue
		}
		info.Architecture, info.Layers, info.MaxContext = gm.Architecture, gm.Layers, gm.MaxContext
		info.BaseBytes, info.KvBytesPerToken = placement.Profile(gm)
	}
	return out
}
