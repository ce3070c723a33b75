// Package httpapi serves the router over the HTTP APIs its users' clients already speak:
// Ollama's (/, /api/*) and OpenAI's (/v1/*). Every request becomes a router.Inference (or an
// embedding request) and runs through router.Service exactly as a gRPC call does; this
// package only translates shapes, streams the answer back chunk by chunk, and reports the
// route taken in response headers (and trailers, for streams).
//
// The router package does not import this one: the binary mounts New's handler next to the
// router's own REST gateway.
package httpapi

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/sollol/mesh/services/router"
)

// DefaultMaxBodyBytes bounds a request body when Options leaves it zero; it matches the
// router's --router.max-body-bytes default.
const DefaultMaxBodyBytes = 32 << 20

// ollamaCompatVersion is the Ollama API version this layer follows; /api/version reports it
// when no Ollama node is known to report a lower one.
const ollamaCompatVersion = "0.17.4"

// Options configure the HTTP APIs.
type Options struct {
	// MaxBodyBytes bounds a request body (DefaultMaxBodyBytes when zero); a larger one is
	// refused with 413.
	MaxBodyBytes int64
	// Logger receives panics and unexpected failures (slog.Default when nil).
	Logger *slog.Logger
	// Version is the SOLLOL version, sent in the X-Sollol-Version header.
	Version string
}

// api is the handler's state: the router and the options, nothing per request.
type api struct {
	r    *router.Service
	opts Options
	log  *slog.Logger
}

// New returns the handler serving the Ollama and OpenAI APIs over r. Mount it at "/": it
// answers only its own paths and 404s the rest, so more specific mounts (the REST gateway
// under /sollol/, /readyz, /metrics) keep working beside it.
func New(r *router.Service, opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &api{r: r, opts: opts, log: opts.Logger.With("component", "httpapi")}

	mux := http.NewServeMux()
	// Ollama. GET patterns answer HEAD too, as Ollama's do.
	mux.HandleFunc("GET /{$}", a.ollamaRoot)
	mux.HandleFunc("GET /api/version", a.ollamaVersion)
	mux.HandleFunc("POST /api/chat", a.ollamaChat)
	mux.HandleFunc("POST /api/generate", a.ollamaGenerate)
	mux.HandleFunc("POST /api/embed", a.ollamaEmbed)
	mux.HandleFunc("POST /api/embeddings", a.ollamaEmbeddings)
	mux.HandleFunc("GET /api/tags", a.ollamaTags)
	mux.HandleFunc("GET /api/ps", a.ollamaPS)
	mux.HandleFunc("POST /api/show", a.ollamaShow)
	for _, p := range []string{"POST /api/pull", "POST /api/push", "POST /api/create", "POST /api/copy", "DELETE /api/delete", "POST /api/blobs/{digest}", "HEAD /api/blobs/{digest}"} {
		mux.HandleFunc(p, a.ollamaManage)
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeOllamaError(w, &apiError{status: http.StatusNotFound, message: "no such endpoint: " + r.Method + " " + r.URL.Path, code: "not_found"})
	})
	// OpenAI.
	mux.HandleFunc("POST /v1/chat/completions", a.openaiChat)
	mux.HandleFunc("POST /v1/completions", a.openaiCompletions)
	mux.HandleFunc("POST /v1/embeddings", a.openaiEmbeddings)
	mux.HandleFunc("GET /v1/models", a.openaiModels)
	mux.HandleFunc("GET /v1/models/{model...}", a.openaiModel)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeOpenAIError(w, &apiError{status: http.StatusNotFound, message: "no such endpoint: " + r.Method + " " + r.URL.Path, code: "not_found"})
	})
	return a.recoverPanics(a.common(mux))
}

// common sets what every answer carries.
func (a *api) common(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.opts.Version != "" {
			w.Header().Set("X-Sollol-Version", a.opts.Version)
		}
		next.ServeHTTP(w, r)
	})
}

// recoverPanics keeps a handler's panic from reaching the client as a dropped connection
// with no explanation: before the first byte it answers 500 in the API's own error shape;
// after it, the response cannot be repaired, so the stream is aborted (the client sees a
// truncated body, which is what it is).
func (a *api) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { // net/http's own signal to abort quietly: let it through
				panic(v)
			}
			a.log.Error("panic in HTTP handler", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			if tw.wrote {
				panic(http.ErrAbortHandler)
			}
			e := &apiError{status: http.StatusInternalServerError, message: "internal error: the router failed while serving this request", code: "internal"}
			if strings.HasPrefix(r.URL.Path, "/v1/") {
				writeOpenAIError(tw, e)
			} else {
				writeOllamaError(tw, e)
			}
		}()
		next.ServeHTTP(tw, r)
	})
}

// trackingWriter records whether the response has started. Unwrap lets
// http.ResponseController reach the real writer's Flush and deadlines.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	if code >= 200 {
		t.wrote = true
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap is for http.ResponseController.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
