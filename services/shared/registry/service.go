package registry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/sollol/mesh/services/shared/grpclink"
)

// ServiceTarget is the etcd naming target of a mesh service ("ollamapool", "coordinator", ...).
// It carries no leading slash: the etcd resolver builds keys as target + "/" + instance.
func ServiceTarget(service string) string { return "sollol/v1/services/" + service }

// ServiceRegistration announces one instance of a service at addr in etcd's naming/endpoints
// format, under a lease kept alive until Stop. The etcd gRPC resolver turns the set of
// instances into a client's address list, so scaled replicas need no load balancer.
type ServiceRegistration struct {
	service, addr string
	manager       endpoints.Manager
	keeper        *leaseKeeper
	cancel        context.CancelFunc
	done          chan struct{}
}

// RegisterService announces addr as an instance of service and returns once etcd has it.
func RegisterService(ctx context.Context, cli *clientv3.Client, service, addr string, ttl time.Duration, log *slog.Logger) (*ServiceRegistration, error) {
	target := ServiceTarget(service)
	manager, err := endpoints.NewManager(cli, target)
	if err != nil {
		return nil, fmt.Errorf("registry: endpoints manager for %s: %w", target, err)
	}
	r := &ServiceRegistration{service: service, addr: addr, manager: manager, done: make(chan struct{})}
	key := target + "/" + addr
	r.keeper = newLeaseKeeper(cli, ttl, log.With("service", service, "addr", addr),
		func(ctx context.Context, lease clientv3.LeaseID) error {
			return manager.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease))
		})
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.keeper.run(runCtx)
	}()
	if err := r.keeper.waitWritten(ctx); err != nil {
		r.Stop()
		return nil, fmt.Errorf("registry: register %s at %s: %w", service, addr, err)
	}
	return r, nil
}

// Stop deregisters the instance (revoking its lease) so clients stop picking it at once.
func (r *ServiceRegistration) Stop() {
	r.cancel()
	<-r.done
}

// DialService opens a client connection to every registered instance of service, balancing
// calls round-robin over them and following instances as they come and go.
func DialService(cli *clientv3.Client, service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		return nil, fmt.Errorf("registry: etcd resolver: %w", err)
	}
	base := append(grpclink.DialOptions(),
		grpc.WithResolvers(builder),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		// A replica that vanishes without closing its connections (a killed container, a
		// lost host) must not keep receiving calls: pings find such a connection dead
		// within seconds, well before its etcd registration expires.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
	)
	conn, err := grpc.NewClient("etcd:///"+ServiceTarget(service), append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("registry: dial %s: %w", service, err)
	}
	return conn, nil
}
