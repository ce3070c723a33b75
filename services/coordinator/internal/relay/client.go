package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sollol/mesh/services/shared/httpjson"
)

// Limits of what an error carries about the request and the answer.
const (
	requestDetailLimit  = 2048
	responseDetailLimit = 1024
)

// Client streams completions from llama-servers.
type Client struct {
	// HTTP is the client; it needs no timeout (streams are long) and should keep connections
	// alive, since every request goes to one of a few servers.
	HTTP *http.Client
	// ShowText puts prompt text in logs and error details; off, it is redacted to its length.
	ShowText bool
	// Log receives one line per failed upstream request.
	Log *slog.Logger
}

// NewHTTPClient is an HTTP client tuned for many concurrent streams to a few local servers.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// Result sums up a finished generation.
type Result struct {
	PromptTokens, CompletionTokens uint32
	// FinishReason is "stop" or "length" (or what llama-server said).
	FinishReason string
	// PromptEval and Eval are llama-server's own timings.
	PromptEval, Eval time.Duration
}

// Chat streams a chat completion from the llama-server at addr, calling onText with each
// piece of text as it arrives. It succeeds only when the stream ends with its final chunk.
func (c *Client) Chat(ctx context.Context, addr string, r ChatRequest, onText func(string) error) (*Result, error) {
	body := chatBody(r, false)
	return c.stream(ctx, addr, "/v1/chat/completions", body, func() any { return chatBody(r, !c.ShowText) }, &chatDecoder{}, onText)
}

// Complete streams a raw completion (/completion, no chat template) like Chat.
func (c *Client) Complete(ctx context.Context, addr string, r CompletionRequest, onText func(string) error) (*Result, error) {
	body := completionBody(r, false)
	return c.stream(ctx, addr, "/completion", body, func() any { return completionBody(r, !c.ShowText) }, &completionDecoder{}, onText)
}

// decoder understands one endpoint's stream events.
type decoder interface {
	// event handles one data payload: text to relay, whether the final event was seen.
	event(data []byte, res *Result) (text string, final bool, err error)
	// needsDone says whether the stream must end with "data: [DONE]" after the final event.
	needsDone() bool
}

func (c *Client) stream(ctx context.Context, addr, path string, body any, shown func() any, dec decoder, onText func(string) error) (*Result, error) {
	req, err := httpjson.NewRequest(ctx, http.MethodPost, "http://"+addr+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &StreamError{Addr: addr, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, c.upstreamError(addr, path, resp.StatusCode, b, shown)
	}

	res := &Result{}
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	tokens, final, done := 0, false, false
	for !done {
		line, err := readLine(br)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if final && !dec.needsDone() && errors.Is(err, io.EOF) {
				break
			}
			return nil, &StreamError{Addr: addr, Tokens: tokens, Err: noFinal(err, final)}
		}
		switch {
		case len(line) == 0 || line[0] == ':':
			continue
		case bytes.HasPrefix(line, []byte("error:")):
			return nil, c.upstreamError(addr, path, 0, bytes.TrimSpace(line[len("error:"):]), shown)
		case !bytes.HasPrefix(line, []byte("data:")):
			continue
		}
		data := bytes.TrimSpace(line[len("data:"):])
		if bytes.Equal(data, []byte("[DONE]")) {
			if !final {
				return nil, &StreamError{Addr: addr, Tokens: tokens, Err: errors.New("[DONE] before the final chunk")}
			}
			break
		}
		if bytes.HasPrefix(data, []byte(`{"error"`)) {
			return nil, c.upstreamError(addr, path, 0, data, shown)
		}
		text, isFinal, err := dec.event(data, res)
		if err != nil {
			return nil, &StreamError{Addr: addr, Tokens: tokens, Err: err}
		}
		if text != "" {
			tokens++
			if err := onText(text); err != nil {
				return nil, err
			}
		}
		if isFinal {
			final = true
			done = !dec.needsDone()
		}
	}
	return res, nil
}

// noFinal explains a stream that broke off.
func noFinal(err error, final bool) error {
	if final {
		return fmt.Errorf("the stream ended after its final chunk but without [DONE]: %w", err)
	}
	return fmt.Errorf("the stream ended without its final chunk: %w", err)
}

// readLine reads one line without its newline, however long.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		buf := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = br.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// upstreamError records a refused request in the log and in the error, with what was sent
// (text redacted unless ShowText) and what came back.
func (c *Client) upstreamError(addr, path string, status int, body []byte, shown func() any) error {
	e := &UpstreamError{Addr: addr, Path: path, Status: status, Request: describe(shown(), requestDetailLimit),
		Response: truncate(string(body), responseDetailLimit)}
	var wire struct {
		Error json.RawMessage `json:"error"`
	}
	var obj errWire
	if json.Unmarshal(body, &wire) == nil && len(wire.Error) > 0 {
		if json.Unmarshal(wire.Error, &obj) != nil {
			_ = json.Unmarshal(wire.Error, &obj.Message)
		}
	} else {
		_ = json.Unmarshal(body, &obj)
	}
	e.Message, e.Type = obj.Message, obj.Type
	if e.Status == 0 {
		e.Status = obj.Code
	}
	if c.Log != nil {
		c.Log.Warn("llama-server refused a request", "coordinator", addr, "path", path, "status", e.Status,
			"type", e.Type, "message", e.Message, "request", e.Request)
	}
	return e
}

type errWire struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}
