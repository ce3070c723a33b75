// Package streambench measures concurrent streamed requests the one way every benchmark of
// the project reports them: time to first token per request (p50/p99), tokens per second, and
// the process's CPU per token and per request.
//
// Streams arrive in one of two ways. A burst starts every stream in the same instant. Spread
// starts stream i at i/streams of a spread window (one request's duration), so that the
// streams are all open at once but begin and end at different moments, as independent
// clients do. The two answer different questions: a burst measures how long the last of N
// simultaneous arrivals waits for the CPU, spread arrivals measure what a path adds to each
// request while N streams are open. The fake backends are deterministic (every request the
// same length, every token the same gap), so without a spread the streams of a burst stay in
// lockstep for the whole run and every request after the first starts in a burst as well.
package streambench

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Run is what one measurement saw.
type Run struct {
	TTFT    []time.Duration // one per request
	Total   []time.Duration // one per request, the whole stream
	Tokens  int
	Elapsed time.Duration
	CPU     time.Duration // the whole process's
}

// Request runs one streamed request and returns its time to first token and its tokens.
type Request func() (ttft time.Duration, tokens int, err error)

// Measure runs streams concurrent loops of perStream requests each, stream i starting at
// i/streams of spread (0: all at once). Every request must succeed with exactly tokens
// tokens; the first that does not ends the loops and is returned.
func Measure(streams, perStream, tokens int, spread time.Duration, do Request) (Run, error) {
	var (
		mu       sync.Mutex
		out      Run
		firstErr error
		wg       sync.WaitGroup
	)
	cpu0, start := cpuTime(), time.Now()
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(spread * time.Duration(i) / time.Duration(streams))
			for range perStream {
				began := time.Now()
				ttft, n, err := do()
				total := time.Since(began)
				if err == nil && n != tokens {
					err = fmt.Errorf("%d tokens instead of %d", n, tokens)
				}
				mu.Lock()
				if err != nil || firstErr != nil {
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
					return
				}
				out.TTFT = append(out.TTFT, ttft)
				out.Total = append(out.Total, total)
				out.Tokens += n
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out.Elapsed, out.CPU = time.Since(start), cpuTime()-cpu0
	return out, firstErr
}

// Arrivals says how a measurement's streams start.
type Arrivals int

const (
	Burst  Arrivals = iota // all in the same instant
	Spread                 // evenly over one request's duration
)

// SpreadOver is the spread window for a path whose burst run r made perStream requests per
// stream: one request's duration, so that arrivals fall evenly over it.
func SpreadOver(r Run, perStream int) time.Duration { return r.Elapsed / time.Duration(perStream) }

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Merge adds another measurement of the same path.
func (r Run) Merge(o Run) Run {
	return Run{TTFT: append(slices.Clone(r.TTFT), o.TTFT...), Total: append(slices.Clone(r.Total), o.Total...),
		Tokens: r.Tokens + o.Tokens, Elapsed: r.Elapsed + o.Elapsed, CPU: r.CPU + o.CPU}
}

// P is the q-th percentile of time to first token.
func (r Run) P(q int) time.Duration { return Percentile(r.TTFT, q) }

// PTotal is the q-th percentile of the whole stream's time.
func (r Run) PTotal(q int) time.Duration { return Percentile(r.Total, q) }

// RequestsPerSecond is the request rate over the wall time.
func (r Run) RequestsPerSecond() float64 { return float64(len(r.TTFT)) / r.Elapsed.Seconds() }

// Percentile is the q-th percentile (0–100) of ds, one of its values; 0 when ds is empty.
func Percentile(ds []time.Duration, q int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*q/100]
}

// TokensPerSecond is the throughput over the wall time. With spread arrivals the first and
// last spread window have fewer streams open, so a backend with room to spare shows about
// perStream/(perStream+1) of its steady rate; a saturated one shows its rate.
func (r Run) TokensPerSecond() float64 { return float64(r.Tokens) / r.Elapsed.Seconds() }

// CPUPerToken is the process's CPU per token, in µs.
func (r Run) CPUPerToken() float64 { return float64(r.CPU.Microseconds()) / float64(r.Tokens) }

// CPUPerRequest is the process's CPU per request, streaming included, in µs.
func (r Run) CPUPerRequest() float64 { return float64(r.CPU.Microseconds()) / float64(len(r.TTFT)) }

// Ms is d in milliseconds, for b.ReportMetric.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
