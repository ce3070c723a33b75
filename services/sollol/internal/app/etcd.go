package app

import (
	"context"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sollol/mesh/services/shared/etcdembed"
	"github.com/sollol/mesh/services/shared/registry"
)

// etcdService is the process's link to etcd as a lifecycle step: it starts the embedded
// member when there is one, proves the cluster answers, and is stopped last so every service
// can deregister first.
type etcdService struct {
	client  *clientv3.Client
	timeout time.Duration
	// embed is set when this process runs etcd itself (`sollol up` without endpoints).
	embed  *etcdembed.Config
	server *etcdembed.Server
	errc   chan error
}

// newEtcdService decides between an external cluster and an embedded member and creates the
// client all services share. The client connects lazily, so it can exist before the member.
func newEtcdService(cfg *Config, embedAllowed bool) (*etcdService, error) {
	s := &etcdService{timeout: cfg.Etcd.DialTimeout, errc: make(chan error, 1)}
	endpoints := []string(cfg.Etcd.Endpoints)
	switch {
	case len(endpoints) > 0:
	case embedAllowed:
		s.embed = &etcdembed.Config{
			Dir:          filepath.Join(cfg.DataDir, "etcd"),
			ClientAddr:   cfg.Etcd.EmbedClientAddr,
			PeerAddr:     cfg.Etcd.EmbedPeerAddr,
			StartTimeout: 30 * time.Second,
		}
		endpoints = []string{cfg.Etcd.EmbedClientAddr}
	default:
		endpoints = []string{defaultEtcdEndpoint}
	}
	cli, err := registry.NewClient(endpoints)
	if err != nil {
		return nil, err
	}
	s.client = cli
	return s, nil
}

func (s *etcdService) Name() string { return "etcd" }

func (s *etcdService) Err() <-chan error { return s.errc }

func (s *etcdService) Start(ctx context.Context) error {
	if s.embed != nil {
		server, err := etcdembed.Start(ctx, *s.embed)
		if err != nil {
			return err
		}
		s.server = server
		go func() {
			if err, ok := <-server.Err(); ok && err != nil {
				s.errc <- err
			}
		}()
	}
	return registry.Ping(ctx, s.client, s.timeout)
}

func (s *etcdService) Stop(context.Context) error {
	err := s.client.Close()
	if s.server != nil {
		s.server.Close()
	}
	return err
}
