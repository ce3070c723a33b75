package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/router"
)

// Route-reporting headers. On a stream they are also trailers: the header names the first
// path (all that is known before the first byte), the trailer the final route after any
// fallback.
const (
	headerRoute          = "X-Sollol-Route"
	headerBackend        = "X-Sollol-Backend"
	headerAttempts       = "X-Sollol-Attempts"
	headerFallbackReason = "X-Sollol-Fallback-Reason"
	headerServerTiming   = "Server-Timing"
)

var routeTrailers = strings.Join([]string{headerRoute, headerBackend, headerAttempts, headerFallbackReason, headerServerTiming}, ", ")

// encoder is how one API renders the events of one inference request.
type encoder interface {
	// streamContentType is the media type of a streamed answer.
	streamContentType() string
	// chunk renders a piece of text as one stream event.
	chunk(text string) []byte
	// progress renders coordinator load progress as a stream event, or nil to drop it;
	// idle is how long nothing has been written.
	progress(p *commonv1.LoadProgress, idle time.Duration) []byte
	// end renders the events that close a successful stream.
	end(done *commonv1.Done, total time.Duration) []byte
	// whole renders a non-streamed answer.
	whole(done *commonv1.Done, text string, total time.Duration) any
	// streamError renders an error as the last event of a stream whose headers are gone.
	streamError(e *apiError) []byte
	// writeError answers with an error while the status can still be chosen.
	writeError(w http.ResponseWriter, e *apiError)
}

// exchange is one HTTP request running through the router: it owns the response, reports
// the route in headers and trailers, and times each hop. Router.Run calls OnPath and the
// sink from the handler's goroutine, so no locking is needed.
type exchange struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	enc    encoder
	stream bool

	arrived   time.Time // request received
	runStart  time.Time // handed to the router
	decide    time.Duration
	ttft      time.Duration
	lastWrite time.Time
	path      commonv1.RoutePath
	paths     int  // paths started (2 after a fallback)
	committed bool // status and headers sent
	text      strings.Builder
}

func newExchange(w http.ResponseWriter, arrived time.Time, enc encoder, stream bool) *exchange {
	return &exchange{w: w, rc: http.NewResponseController(w), enc: enc, stream: stream, arrived: arrived, lastWrite: arrived}
}

// onPath is router.Inference.OnPath: it names the path in the headers while they can still
// change.
func (x *exchange) onPath(p commonv1.RoutePath, fallbackReason string) {
	if x.paths == 0 {
		x.decide = time.Since(x.runStart)
	}
	x.paths++
	x.path = p
	if x.committed {
		return
	}
	h := x.w.Header()
	h.Set(headerRoute, pathName(p))
	if fallbackReason != "" {
		h.Set(headerFallbackReason, headerSafe(fallbackReason))
	}
}

// Text is router.Sink: a non-streamed answer is collected, a streamed one written and flushed
// at once, never buffered.
func (x *exchange) Text(t string) error {
	if x.ttft == 0 {
		x.ttft = time.Since(x.runStart)
	}
	if !x.stream {
		x.text.WriteString(t)
		return nil
	}
	return x.write(x.enc.chunk(t))
}

// Progress is router.Sink; only streams can carry it, and only where the API has a way to.
func (x *exchange) Progress(p *commonv1.LoadProgress) error {
	if !x.stream {
		return nil
	}
	if b := x.enc.progress(p, time.Since(x.lastWrite)); b != nil {
		return x.write(b)
	}
	return nil
}

// write sends bytes of a stream, committing the status and headers first.
func (x *exchange) write(b []byte) error {
	if !x.committed {
		h := x.w.Header()
		h.Set("Content-Type", x.enc.streamContentType())
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // tell reverse proxies not to buffer the stream
		h.Set(headerServerTiming, x.timing(nil, 0))
		h.Set("Trailer", routeTrailers)
		x.w.WriteHeader(http.StatusOK)
		x.committed = true
	}
	x.lastWrite = time.Now()
	_, err := x.w.Write(b)
	if err == nil {
		err = x.rc.Flush()
	}
	if err != nil {
		// Only a client that went away makes a write fail: to the router that is a
		// cancellation, not a failure of the path. A status rather than a wrapped
		// context.Canceled, because the router's counters read gRPC codes.
		return status.Errorf(codes.Canceled, "the client went away: %v", err)
	}
	return nil
}

// run hands in to the router and answers: a stream as it happens, or one document at the
// end. Errors are answered in the encoder's shape with the right status while nothing was
// sent, and as the stream's last event after.
func (a *api) run(w http.ResponseWriter, r *http.Request, arrived time.Time, in *router.Inference, enc encoder, stream bool) {
	x := newExchange(w, arrived, enc, stream)
	in.OnPath = x.onPath
	x.runStart = time.Now()
	done, d, err := a.r.Run(r.Context(), in, x)
	total := time.Since(arrived)
	if x.paths == 0 {
		x.decide = time.Since(x.runStart) // refused before any path started: all of it was deciding
	}
	if err != nil {
		e := toAPIError(a.classify(err, in.Model, d, in.Hint))
		if r.Context().Err() != nil || e.status == statusClientClosed {
			return // the client left; nobody to answer (the 499 of the logs)
		}
		if e.status >= 500 {
			a.log.Warn("inference failed", "model", in.Model, "path", pathName(x.path), "status", e.status, "err", err)
		}
		x.reportRoute(nil, total)
		if x.committed {
			_ = x.write(enc.streamError(e))
			return
		}
		enc.writeError(w, e)
		return
	}
	if stream {
		if err := x.write(enc.end(done, total)); err != nil {
			return
		}
		x.reportRoute(done, total)
		return
	}
	x.reportRoute(done, total)
	writeJSON(w, http.StatusOK, enc.whole(done, x.text.String(), total))
}

// reportRoute sets the final route: as trailers on a stream already sent, as headers
// otherwise. A failed request reports the last path tried.
func (x *exchange) reportRoute(done *commonv1.Done, total time.Duration) {
	h := x.w.Header()
	rt := done.GetRoute()
	path := x.path
	if rt.GetPath() != commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED {
		path = rt.GetPath()
	}
	if path != commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED {
		h.Set(headerRoute, pathName(path))
	}
	if rt.GetBackend() != "" {
		h.Set(headerBackend, headerSafe(rt.GetBackend()))
	}
	attempts := int(rt.GetAttempts())
	if attempts == 0 {
		attempts = x.paths
	}
	if attempts > 0 {
		h.Set(headerAttempts, strconv.Itoa(attempts))
	}
	if rt.GetFallbackReason() != "" {
		h.Set(headerFallbackReason, headerSafe(rt.GetFallbackReason()))
	}
	h.Set(headerServerTiming, x.timing(done, total))
}

// timing is the Server-Timing value: the router's own hops (decide, time to first token,
// total as the router saw it) and the backend's (load, prompt evaluation, generation).
func (x *exchange) timing(done *commonv1.Done, total time.Duration) string {
	parts := []string{metric("decide", x.decide)}
	if x.ttft > 0 {
		parts = append(parts, metric("ttft", x.ttft))
	}
	if total > 0 {
		parts = append(parts, metric("total", total))
	}
	t := done.GetTimings()
	for _, m := range []struct {
		name string
		d    time.Duration
	}{{"backend-load", t.GetLoad().AsDuration()}, {"backend-prompt", t.GetPromptEval().AsDuration()}, {"backend-eval", t.GetEval().AsDuration()}} {
		if t != nil && m.d > 0 {
			parts = append(parts, metric(m.name, m.d))
		}
	}
	return strings.Join(parts, ", ")
}

func metric(name string, d time.Duration) string {
	return fmt.Sprintf("%s;dur=%.3f", name, float64(d)/float64(time.Millisecond))
}

// pathName is the route's name in headers: "pool" or "shard".
func pathName(p commonv1.RoutePath) string {
	switch p {
	case commonv1.RoutePath_ROUTE_PATH_POOL:
		return "pool"
	case commonv1.RoutePath_ROUTE_PATH_SHARD:
		return "shard"
	}
	return "none"
}

// headerSafe keeps a message fit for a header: one line of printable text, bounded.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
