// Package registry is the mesh's one place for etcd access: typed values under the versioned
// key prefix, writes attached to a lease that is kept alive (and re-established after an
// outage), an in-memory snapshot fed by a watch that keeps serving while etcd is unreachable,
// and service-instance registration for the etcd gRPC resolver.
//
// Key layout (all under Root):
//
//	/sollol/v1/backends/<id>            discovery's verified backends
//	/sollol/v1/coordinators/<model>     coordinator-manager's running coordinators
//	sollol/v1/services/<service>/<addr> service instances (etcd naming/endpoints format)
package registry

// Root is the versioned prefix of every key the mesh writes. A new layout gets a new version,
// so old and new binaries can share an etcd cluster during an upgrade.
const Root = "/sollol/v1/"

// Prefixes of each kind of record, under Root.
const (
	// BackendsPrefix holds one key per backend found by discovery.
	BackendsPrefix = Root + "backends/"
	// CoordinatorsPrefix holds one key per running llama-server coordinator.
	CoordinatorsPrefix = Root + "coordinators/"
)
