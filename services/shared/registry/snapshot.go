package registry

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// EventType says what happened to a key.
type EventType int

// Event types.
const (
	// EventPut means the key was created or its value changed.
	EventPut EventType = iota + 1
	// EventDelete means the key is gone (deleted, or its lease expired).
	EventDelete
)

// Event is one change seen by a Snapshot.
type Event[T any] struct {
	Type     EventType
	ID       string
	Value    T // the new value; the last known value for EventDelete
	Revision int64
}

// Snapshot mirrors every value under a store's prefix in memory: a list, then a watch from the
// list's revision. Reads never touch etcd, so they keep answering from the last known state
// while etcd is unreachable; the watch resumes when etcd returns, and if the history it
// needs was compacted meanwhile the snapshot lists again and reports the difference as events.
type Snapshot[T any] struct {
	store *Store[T]
	log   *slog.Logger

	mu     sync.RWMutex
	items  map[string]T
	rev    int64
	subs   map[int]chan Event[T]
	nextID int

	synced     chan struct{}
	syncedOnce sync.Once
	cancel     context.CancelFunc
	done       chan struct{}
}

// NewSnapshot returns a stopped snapshot of store; call Start.
func NewSnapshot[T any](store *Store[T], log *slog.Logger) *Snapshot[T] {
	return &Snapshot[T]{
		store:  store,
		log:    log,
		items:  map[string]T{},
		subs:   map[int]chan Event[T]{},
		synced: make(chan struct{}),
	}
}

// Start begins mirroring and returns after the first full list, or with ctx's error.
func (s *Snapshot[T]) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		s.run(runCtx)
	}()
	select {
	case <-s.synced:
		return nil
	case <-ctx.Done():
		s.Stop()
		return fmt.Errorf("registry: first list of %s: %w", s.store.prefix, ctx.Err())
	}
}

// Stop ends the watch and closes every subscription.
func (s *Snapshot[T]) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ch := range s.subs {
		close(ch)
		delete(s.subs, id)
	}
}

// Items returns a copy of every value by id.
func (s *Snapshot[T]) Items() map[string]T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.items)
}

// Get returns id's value.
func (s *Snapshot[T]) Get(id string) (T, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.items[id]
	return v, ok
}

// Revision is the etcd revision the snapshot reflects.
func (s *Snapshot[T]) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Subscribe returns the current items and revision together with a channel of every later
// change, so a caller sees each change exactly once. The channel holds buffer events; a
// subscriber that falls further behind has its channel closed and must subscribe again.
func (s *Snapshot[T]) Subscribe(buffer int) (items map[string]T, rev int64, events <-chan Event[T], cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan Event[T], buffer)
	id := s.nextID
	s.nextID++
	s.subs[id] = ch
	cancel = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c, ok := s.subs[id]; ok {
			close(c)
			delete(s.subs, id)
		}
	}
	return maps.Clone(s.items), s.rev, ch, cancel
}

func (s *Snapshot[T]) run(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		rev, err := s.relist(ctx)
		if err != nil {
			s.log.Warn("etcd list failed; serving the last snapshot", "prefix", s.store.prefix, "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		s.watchFrom(ctx, rev+1)
	}
}

// relist reads the whole prefix and turns the difference to the current items into events.
func (s *Snapshot[T]) relist(ctx context.Context) (int64, error) {
	listCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	items, rev, skipped, err := s.store.List(listCtx)
	if err != nil {
		return 0, err
	}
	if skipped > 0 {
		s.log.Warn("etcd values that do not decode were skipped", "prefix", s.store.prefix, "count", skipped)
	}
	s.mu.Lock()
	for id, old := range s.items {
		if _, ok := items[id]; !ok {
			s.publishLocked(Event[T]{Type: EventDelete, ID: id, Value: old, Revision: rev})
		}
	}
	for id, v := range items {
		if old, ok := s.items[id]; !ok || !equal(old, v) {
			s.publishLocked(Event[T]{Type: EventPut, ID: id, Value: v, Revision: rev})
		}
	}
	s.items = items
	s.rev = rev
	s.mu.Unlock()
	s.syncedOnce.Do(func() { close(s.synced) })
	return rev, nil
}

// watchFrom applies watch events until the watch fails (then the caller lists again) or ctx
// ends. While etcd is down the client keeps retrying inside the open watch.
func (s *Snapshot[T]) watchFrom(ctx context.Context, rev int64) {
	wch := s.store.cli.Watch(ctx, s.store.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			s.log.Warn("etcd watch ended; listing again", "prefix", s.store.prefix, "err", err)
			return
		}
		s.mu.Lock()
		for _, ev := range resp.Events {
			s.applyLocked(ev)
		}
		s.rev = resp.Header.Revision
		s.mu.Unlock()
	}
}

func (s *Snapshot[T]) applyLocked(ev *clientv3.Event) {
	id := s.store.id(string(ev.Kv.Key))
	rev := ev.Kv.ModRevision
	if ev.Type == clientv3.EventTypeDelete {
		old, ok := s.items[id]
		if !ok {
			return
		}
		delete(s.items, id)
		s.publishLocked(Event[T]{Type: EventDelete, ID: id, Value: old, Revision: rev})
		return
	}
	v, err := s.store.codec.Unmarshal(ev.Kv.Value)
	if err != nil {
		s.log.Warn("etcd value does not decode; ignored", "key", string(ev.Kv.Key), "err", err)
		return
	}
	s.items[id] = v
	s.publishLocked(Event[T]{Type: EventPut, ID: id, Value: v, Revision: rev})
}

// publishLocked hands ev to every subscriber without blocking the watch: one that cannot keep
// up loses its subscription rather than stalling everyone.
func (s *Snapshot[T]) publishLocked(ev Event[T]) {
	for id, ch := range s.subs {
		select {
		case ch <- ev:
		default:
			close(ch)
			delete(s.subs, id)
		}
	}
}

// equal compares values so a relist reports only real changes. Protobuf messages are compared
// by content; anything else is treated as changed.
func equal[T any](a, b T) bool {
	am, aok := any(a).(proto.Message)
	bm, bok := any(b).(proto.Message)
	if aok && bok {
		return proto.Equal(am, bm)
	}
	return false
}
