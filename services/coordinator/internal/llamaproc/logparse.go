package llamaproc

import (
	"bytes"
	"regexp"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// Event is something the manager learns from llama-server's log.
type Event struct {
	// Stage is the load stage the line shows (LOADING, WARMING, READY), or unspecified.
	Stage commonv1.LoadStage
	// Fraction of the weights loaded, in [0, 1], when Stage is LOADING; negative when the
	// line does not say.
	Fraction float32
	// Message is a short human-readable status.
	Message string
}

// Findings are the facts of a log that decide what to do after an exit.
type Findings struct {
	// Unreachable are rpc endpoints the server could not connect to at start.
	Unreachable []string
	// PortInUse means the HTTP port was taken: start again on another port.
	PortInUse bool
	// BackendCrashed means an rpc backend died under the server.
	BackendCrashed bool
	// Listening means the server reported its HTTP address ready (model loaded).
	Listening bool
}

var failedConnect = regexp.MustCompile(`Failed to connect to (\S+)`)

// parser reads llama-server's output. The model loader prints one '.' per percent of the
// weights loaded with no newline until 100%, so progress is read from the partial line too.
type parser struct {
	line     []byte
	dots     int
	findings Findings
	emit     func(Event)
	onLine   func(string)
}

// write consumes output bytes; it is an io.Writer without the interface's error.
func (p *parser) write(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.line = append(p.line, b...)
			p.partial()
			return
		}
		p.line = append(p.line, b[:i]...)
		p.partial()
		p.complete(string(bytes.TrimRight(p.line, "\r")))
		p.line = p.line[:0]
		b = b[i+1:]
	}
}

// partial reports load progress from a line made of dots so far.
func (p *parser) partial() {
	if len(p.line) == 0 || len(bytes.Trim(p.line, ".")) != 0 {
		return
	}
	if n := len(p.line); n > p.dots {
		p.dots = min(n, 100)
		p.emit(Event{Stage: commonv1.LoadStage_LOAD_STAGE_LOADING, Fraction: float32(p.dots) / 100,
			Message: "loading tensors"})
	}
}

// complete interprets one finished line.
func (p *parser) complete(line string) {
	if p.onLine != nil && strings.TrimSpace(strings.Trim(line, ".")) != "" {
		p.onLine(line)
	}
	switch {
	case strings.HasPrefix(line, "load_tensors: loading model tensors"), strings.HasPrefix(line, "llama_model_loader: loaded meta data"):
		p.emit(Event{Stage: commonv1.LoadStage_LOAD_STAGE_LOADING, Fraction: -1, Message: "loading model tensors"})
	case strings.HasPrefix(line, "llama_context: constructing"), strings.Contains(line, "warming up the model"):
		p.emit(Event{Stage: commonv1.LoadStage_LOAD_STAGE_WARMING, Fraction: -1, Message: "creating the context and warming up"})
	case strings.Contains(line, "server is listening on http"):
		p.findings.Listening = true
	case strings.Contains(line, "couldn't bind HTTP server socket"):
		p.findings.PortInUse = true
	case strings.Contains(line, "Remote RPC server crashed"):
		p.findings.BackendCrashed = true
	}
	if m := failedConnect.FindStringSubmatch(line); m != nil {
		p.findings.Unreachable = append(p.findings.Unreachable, m[1])
	}
}

// flush completes a last line without a newline, at exit.
func (p *parser) flush() {
	if len(p.line) > 0 {
		p.complete(string(p.line))
		p.line = p.line[:0]
	}
}
