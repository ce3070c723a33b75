// Package etcdembed runs an etcd server inside the current process. `sollol up` uses it so a
// newcomer needs no separate etcd, and tests use it so they run against the real thing.
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Config says where the embedded etcd keeps its data and where it listens.
type Config struct {
	// Dir holds the member's data; reusing it restarts the same member with its keys.
	Dir string `yaml:"dir"`
	// ClientAddr is host:port for clients (the etcd default is 127.0.0.1:2379).
	ClientAddr string `yaml:"client_addr"`
	// PeerAddr is host:port for raft peers; a single member still needs one.
	PeerAddr string `yaml:"peer_addr"`
	// StartTimeout bounds how long Start waits for the member to become ready.
	StartTimeout time.Duration `yaml:"start_timeout"`
}

// Server is a running embedded etcd member.
type Server struct {
	etcd     *embed.Etcd
	endpoint string
}

// Start launches the member and returns once it serves clients.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("etcdembed: data dir is empty")
	}
	clientURL, err := url.Parse("http://" + cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: client address %q: %w", cfg.ClientAddr, err)
	}
	peerURL, err := url.Parse("http://" + cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: peer address %q: %w", cfg.PeerAddr, err)
	}
	ec := embed.NewConfig()
	ec.Name = "sollol"
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	// etcd logs through zap at info by default, and even at error level it reports its own
	// orderly shutdown as failures. Its real failures reach us anyway: StartEtcd's error and
	// the Err channel, which the mesh logs in its own format.
	ec.LogLevel = "panic"
	// Compact history hourly so a long-lived `sollol up` does not grow without bound.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdembed: member failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("etcdembed: member not ready after %s", timeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Server{etcd: e, endpoint: clientURL.Host}, nil
}

// Endpoint is the host:port clients connect to.
func (s *Server) Endpoint() string { return s.endpoint }

// Err reports a fatal error of the running member.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member and releases its listeners and data files.
func (s *Server) Close() { s.etcd.Close() }
