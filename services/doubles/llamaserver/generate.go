package llamaserver

import (
	"context"
	"hash/fnv"
	"strings"
	"time"
)

// pieces are the token texts the double emits: printable ASCII, like the tiny model's
// vocabulary, so every stream is valid UTF-8 and token counts are exact.
var pieces = []string{
	" the", " of", " and", " to", " in", " is", " it", " that", " model", " shard",
	" layer", " token", " mesh", " node", " fast", " small", "a", "e", "o", "s", "t",
	"n", "r", "l", " sol", "lol", " rpc", " go", " data", " byte", " time", " word",
	".", ",", "!", "?", " one", " two", " three", " four", " five", " six", " seven",
}

// genRequest is one generation, whichever endpoint it came from.
type genRequest struct {
	prompt    string // the rendered prompt
	nPredict  int    // < 0: until the slot's context is full
	stop      []string
	seed      uint64
	crash     bool
	usage     bool // stream_options.include_usage
	streaming bool
}

// genEvent is one generated piece, or the end of the generation.
type genEvent struct {
	text      string
	id        int
	final     bool
	stopType  string // "limit", "word", "eos"
	stopWord  string
	predicted int
}

// promptTokens is the double's token count of a rendered prompt: BOS plus one per byte.
func promptTokens(prompt string) int { return 1 + len(prompt) }

// generate produces the request's tokens into emit until done or ctx ends. It holds a slot
// for its whole run; requests beyond the slots wait, as in llama-server's task queue.
func (s *Server) generate(ctx context.Context, r genRequest, emit func(genEvent) bool) error {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.slots }()

	budget := s.nSlot - promptTokens(r.prompt)
	n := r.nPredict
	if n < 0 || n > budget {
		n = budget
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(r.prompt))
	state := h.Sum64() ^ r.seed
	var text strings.Builder
	for i := 0; i < n; i++ {
		if s.opts.TokenInterval > 0 {
			t := time.NewTimer(s.opts.TokenInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		} else if err := ctx.Err(); err != nil {
			return err
		}
		if r.crash && i == 2 {
			s.die(abortf("Remote RPC server crashed or returned malformed response"))
			<-ctx.Done()
			return ctx.Err()
		}
		state = state*6364136223846793005 + 1442695040888963407
		id := int((state >> 33) % uint64(len(pieces)))
		piece := pieces[id]
		before := text.Len()
		text.WriteString(piece)
		if word, at := findStop(text.String(), before, r.stop); word != "" {
			if at > before && !emit(genEvent{text: text.String()[before:at], id: id, predicted: i + 1}) {
				return ctx.Err()
			}
			emit(genEvent{final: true, stopType: "word", stopWord: word, predicted: i + 1})
			return nil
		}
		if !emit(genEvent{text: piece, id: id, predicted: i + 1}) {
			return ctx.Err()
		}
	}
	emit(genEvent{final: true, stopType: "limit", predicted: n})
	return nil
}

// findStop finds the first stop word that appears in text at or after the part added last
// (from index from, allowing an overlap with earlier text), and where it begins.
func findStop(text string, from int, stops []string) (string, int) {
	best, at := "", -1
	for _, w := range stops {
		if w == "" {
			continue
		}
		start := max(from-len(w)+1, 0)
		if i := strings.Index(text[start:], w); i >= 0 && (at < 0 || start+i < at) {
			best, at = w, start+i
		}
	}
	return best, at
}
