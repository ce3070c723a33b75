package ollama

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/sollol/mesh/services/shared/httpjson"
)

// Timeouts bound each phase of a request separately: a node that takes long to load a model
// is not the same as one that went silent mid-answer.
type Timeouts struct {
	// Connect bounds establishing the TCP connection.
	Connect time.Duration
	// FirstToken bounds the wait for the first chunk, model load included.
	FirstToken time.Duration
	// Idle bounds the silence between two chunks.
	Idle time.Duration
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

var (
	errFirstToken = errors.New("no first token within the first-token timeout")
	errIdle       = errors.New("no token within the idle timeout")
)

// Client talks to any number of Ollama nodes over pooled keep-alive connections.
type Client struct {
	http     *http.Client
	timeouts Timeouts
}

// New returns a client with the given timeouts.
func New(t Timeouts) *Client {
	dialer := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	return &Client{
		timeouts: t,
		http: &http.Client{Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
		}},
	}
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Stream posts body to path on node (host:port) and hands each chunk's text to onText as it
// arrives. It returns the final chunk, or an *Error that says how many texts were handed on
// before the failure. A stream that ends without its final chunk is an error: Ollama cuts
// some streams short with a 200 and no final chunk.
func (c *Client) Stream(ctx context.Context, node, path string, body any, onText func(string) error) (*Chunk, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// One timer guards both phases: until the first chunk it is the first-token timeout,
	// after it the idle timeout, reset by every chunk.
	var started atomic.Bool
	watchdog := time.AfterFunc(c.timeouts.FirstToken, func() {
		if started.Load() {
			cancel(errIdle)
		} else {
			cancel(errFirstToken)
		}
	})
	defer watchdog.Stop()

	resp, err := c.post(ctx, node, path, body)
	if err != nil {
		return nil, c.classify(ctx, node, err, 0)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(node, resp)
	}
	dec := json.NewDecoder(resp.Body)
	tokens := 0
	for {
		var ch Chunk
		if err := dec.Decode(&ch); err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() == nil {
				return nil, &Error{Class: ClassBrokenStream, Node: node, Tokens: tokens, Message: "the stream ended without its final chunk"}
			}
			return nil, c.classify(ctx, node, err, tokens)
		}
		started.Store(true)
		watchdog.Reset(c.timeouts.Idle)
		if ch.Error != "" {
			return nil, &Error{Class: ClassServer, Node: node, Tokens: tokens, Message: ch.Error}
		}
		if text := ch.Text(); text != "" {
			if err := onText(text); err != nil {
				return nil, &Error{Class: ClassCanceled, Node: node, Tokens: tokens, Err: err}
			}
			tokens++
		}
		if ch.Done {
			return &ch, nil
		}
	}
}

// Embed posts one /api/embed request and waits for the whole answer.
func (c *Client) Embed(ctx context.Context, node string, req *EmbedRequest) (*EmbedResponse, error) {
	var out EmbedResponse
	if err := c.call(ctx, node, "/api/embed", req, &out); err != nil {
		return nil, err
	}
	if len(out.Embeddings) != len(req.Input) {
		return nil, &Error{Class: ClassServer, Node: node, Message: fmt.Sprintf("%d embeddings for %d inputs", len(out.Embeddings), len(req.Input))}
	}
	return &out, nil
}

// Load makes node load model into memory (a generate request with no prompt) and keep it
// for keepAlive.
func (c *Client) Load(ctx context.Context, node, model string, keepAlive *KeepAlive) error {
	var out Chunk
	return c.call(ctx, node, "/api/generate", &GenerateRequest{Model: model, KeepAlive: keepAlive}, &out)
}

// call is a non-streaming request bounded by the first-token timeout.
func (c *Client) call(ctx context.Context, node, path string, body, out any) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(c.timeouts.FirstToken, func() { cancel(errFirstToken) })
	defer timer.Stop()
	resp, err := c.post(ctx, node, path, body)
	if err != nil {
		return c.classify(ctx, node, err, 0)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(node, resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return c.classify(ctx, node, err, 0)
	}
	return nil
}

func (c *Client) post(ctx context.Context, node, path string, body any) (*http.Response, error) {
	req, err := httpjson.NewRequest(ctx, http.MethodPost, "http://"+node+path, body)
	if err != nil {
		return nil, err
	}
	return c.http.Do(req)
}

// classify names a transport failure by its cause: our own timeouts, the caller leaving, a
// refused connection, or a stream that broke.
func (c *Client) classify(ctx context.Context, node string, err error, tokens int) *Error {
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errFirstToken):
		return &Error{Class: ClassFirstTokenTimeout, Node: node, Tokens: tokens, Message: fmt.Sprintf("no first token within %s", c.timeouts.FirstToken)}
	case errors.Is(cause, errIdle):
		return &Error{Class: ClassIdleTimeout, Node: node, Tokens: tokens, Message: fmt.Sprintf("no token for %s", c.timeouts.Idle)}
	case ctx.Err() != nil:
		// The caller left or its deadline passed: nothing to hold against the node.
		return &Error{Class: ClassCanceled, Node: node, Tokens: tokens, Err: cause}
	}
	var opErr *net.OpError
	if tokens == 0 && errors.As(err, &opErr) && opErr.Op == "dial" {
		return &Error{Class: ClassConnect, Node: node, Err: err}
	}
	return &Error{Class: ClassBrokenStream, Node: node, Tokens: tokens, Err: err}
}

func statusError(node string, resp *http.Response) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var parsed struct {
		Error string `json:"error"`
	}
	msg := string(bytes.TrimSpace(body))
	if json.Unmarshal(body, &parsed) == nil && parsed.Error != "" {
		msg = parsed.Error
	}
	e := &Error{Node: node, Status: resp.StatusCode, Message: msg}
	switch resp.StatusCode {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		e.Class = ClassBusy
	case http.StatusNotFound:
		e.Class = ClassModelMissing
	case http.StatusBadRequest:
		e.Class = ClassBadRequest
	default:
		e.Class = ClassServer
	}
	return e
}
