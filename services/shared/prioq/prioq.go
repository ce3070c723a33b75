// Package prioq is the one queue of waiting requests: highest priority first, first come,
// first served within a priority. The pool queues requests for a saturated fleet with it and
// the coordinator-manager requests for a coordinator's busy slots.
package prioq

import (
	"cmp"
	"container/heap"
	"slices"
)

// Item is a queued value; keep it to remove the value before its turn.
type Item[T any] struct {
	Value    T
	priority int32
	seq      uint64
	index    int // -1 once out of the queue
}

// Queue orders items by priority, highest first, then by arrival. The zero value is empty
// and ready; it is not safe for concurrent use.
type Queue[T any] struct {
	items items[T]
	seq   uint64
}

// Push queues v.
func (q *Queue[T]) Push(priority int32, v T) *Item[T] {
	q.seq++
	it := &Item[T]{Value: v, priority: priority, seq: q.seq}
	heap.Push(&q.items, it)
	return it
}

// Pop takes the first item out; ok is false when the queue is empty.
func (q *Queue[T]) Pop() (it *Item[T], ok bool) {
	if len(q.items) == 0 {
		return nil, false
	}
	return heap.Pop(&q.items).(*Item[T]), true
}

// Peek is the first item, or nil.
func (q *Queue[T]) Peek() *Item[T] {
	if len(q.items) == 0 {
		return nil
	}
	return q.items[0]
}

// Remove takes it out before its turn; false when it already left the queue.
func (q *Queue[T]) Remove(it *Item[T]) bool {
	if it.index < 0 || it.index >= len(q.items) || q.items[it.index] != it {
		return false
	}
	heap.Remove(&q.items, it.index)
	return true
}

// Ordered lists the items in queue order (a copy): for callers that serve the first item
// that can be served, not just the first.
func (q *Queue[T]) Ordered() []*Item[T] {
	out := slices.Clone([]*Item[T](q.items))
	slices.SortFunc(out, func(a, b *Item[T]) int {
		if a.priority != b.priority {
			return cmp.Compare(b.priority, a.priority)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	return out
}

// Len is the number of items waiting.
func (q *Queue[T]) Len() int { return len(q.items) }

// items implements heap.Interface.
type items[T any] []*Item[T]

func (s items[T]) Len() int { return len(s) }
func (s items[T]) Less(i, j int) bool {
	if s[i].priority != s[j].priority {
		return s[i].priority > s[j].priority
	}
	return s[i].seq < s[j].seq
}
func (s items[T]) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *items[T]) Push(x any) {
	it := x.(*Item[T])
	it.index = len(*s)
	*s = append(*s, it)
}
func (s *items[T]) Pop() any {
	old := *s
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	it.index = -1
	return it
}
