package lifecycle

import "context"

// Background is a goroutine a service runs beside its server (a watch, an election, a
// refresh loop), stopped with the service.
type Background struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// Go runs run in a goroutine of its own until Stop cancels its context.
func Go(run func(ctx context.Context)) *Background {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Background{ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		run(ctx)
	}()
	return b
}

// Context is the goroutine's context, for work that should end with it.
func (b *Background) Context() context.Context { return b.ctx }

// Stop cancels the goroutine and waits for it to return. Safe on nil and more than once.
func (b *Background) Stop() {
	if b == nil {
		return
	}
	b.cancel()
	<-b.done
}
