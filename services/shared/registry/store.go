package registry

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Store is typed access to the keys under one prefix. Ids are the key suffix after the prefix.
type Store[T any] struct {
	cli    *clientv3.Client
	prefix string
	codec  Codec[T]
}

// NewStore returns a store of values of T under prefix (which should end in "/").
func NewStore[T any](cli *clientv3.Client, prefix string, codec Codec[T]) *Store[T] {
	return &Store[T]{cli: cli, prefix: prefix, codec: codec}
}

// Prefix is the key prefix of this store.
func (s *Store[T]) Prefix() string { return s.prefix }

// Key is the full etcd key of id.
func (s *Store[T]) Key(id string) string { return s.prefix + id }

// Put writes id's value; pass clientv3.WithLease to tie it to a lease.
func (s *Store[T]) Put(ctx context.Context, id string, v T, opts ...clientv3.OpOption) error {
	if id == "" {
		return fmt.Errorf("registry: empty id under %s", s.prefix)
	}
	data, err := s.codec.Marshal(v)
	if err != nil {
		return fmt.Errorf("registry: encode %s: %w", s.Key(id), err)
	}
	if _, err := s.cli.Put(ctx, s.Key(id), string(data), opts...); err != nil {
		return fmt.Errorf("registry: put %s: %w", s.Key(id), err)
	}
	return nil
}

// Delete removes id's key.
func (s *Store[T]) Delete(ctx context.Context, id string) error {
	if _, err := s.cli.Delete(ctx, s.Key(id)); err != nil {
		return fmt.Errorf("registry: delete %s: %w", s.Key(id), err)
	}
	return nil
}

// List reads every value under the prefix and the revision it was read at. Values that fail to
// decode are skipped and counted in skipped, so one bad writer cannot hide everyone else.
func (s *Store[T]) List(ctx context.Context) (items map[string]T, rev int64, skipped int, err error) {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("registry: list %s: %w", s.prefix, err)
	}
	items = make(map[string]T, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := s.codec.Unmarshal(kv.Value)
		if err != nil {
			skipped++
			continue
		}
		items[s.id(string(kv.Key))] = v
	}
	return items, resp.Header.Revision, skipped, nil
}

func (s *Store[T]) id(key string) string { return strings.TrimPrefix(key, s.prefix) }
