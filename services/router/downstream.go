package router

import (
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/sollol/mesh/services/shared/registry"
)

// downstream holds the router's connections to the pool and the coordinator-manager, each
// balanced over all registered replicas through the etcd resolver. A connection is made on
// first use only: in pure-RPC mode no pool connection ever exists.
type downstream struct {
	etcd *clientv3.Client

	mu        sync.Mutex
	poolConn  *grpc.ClientConn
	coordConn *grpc.ClientConn
	poolDials int // how many pool connections were made (0 in pure-RPC mode; tests check)
}

func (d *downstream) pool() (*grpc.ClientConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poolConn == nil {
		conn, err := dial(d.etcd, "ollamapool")
		if err != nil {
			return nil, err
		}
		d.poolConn = conn
		d.poolDials++
	}
	return d.poolConn, nil
}

func (d *downstream) coordinator() (*grpc.ClientConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coordConn == nil {
		conn, err := dial(d.etcd, "coordinator")
		if err != nil {
			return nil, err
		}
		d.coordConn = conn
	}
	return d.coordConn, nil
}

func dial(cli *clientv3.Client, service string) (*grpc.ClientConn, error) {
	return registry.DialService(cli, service)
}

// poolConnected reports whether a pool connection was ever made.
func (d *downstream) poolConnected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.poolDials > 0
}

func (d *downstream) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range []*grpc.ClientConn{d.poolConn, d.coordConn} {
		if c != nil {
			_ = c.Close()
		}
	}
	d.poolConn, d.coordConn = nil, nil
}
