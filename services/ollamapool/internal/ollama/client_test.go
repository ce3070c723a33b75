package ollama_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/doubles/ollamafake"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/netutil"
)

// These cases are the ones a real Ollama cannot be made to produce on demand; the pool's
// integration tests run against the real server.
func TestStreamClassifiesEveryEnding(t *testing.T) {
	refused, err := netutil.FreeLoopbackAddr()
	require.NoError(t, err)
	tests := []struct {
		name      string
		behaviour ollamafake.Behaviour
		timeouts  ollama.Timeouts
		addr      string
		class     ollama.Class
		tokens    int
		retryable bool
		fault     bool
	}{
		{"busy 503", ollamafake.Behaviour{Status: http.StatusServiceUnavailable}, fast, "", ollama.ClassBusy, 0, true, false},
		{"busy 429", ollamafake.Behaviour{Status: http.StatusTooManyRequests}, fast, "", ollama.ClassBusy, 0, true, false},
		{"model missing", ollamafake.Behaviour{Status: http.StatusNotFound}, fast, "", ollama.ClassModelMissing, 0, true, false},
		{"bad request", ollamafake.Behaviour{Status: http.StatusBadRequest}, fast, "", ollama.ClassBadRequest, 0, false, false},
		{"server error", ollamafake.Behaviour{Status: http.StatusInternalServerError}, fast, "", ollama.ClassServer, 0, true, true},
		{"cut short without the final chunk", ollamafake.Behaviour{CutAfter: 3}, fast, "", ollama.ClassBrokenStream, 3, false, true},
		{"error line mid-stream", ollamafake.Behaviour{ErrorAfter: 2}, fast, "", ollama.ClassServer, 2, false, true},
		{"silence after tokens", ollamafake.Behaviour{StallAfter: 2}, ollama.Timeouts{Connect: time.Second, FirstToken: 5 * time.Second, Idle: 100 * time.Millisecond}, "", ollama.ClassIdleTimeout, 2, false, true},
		{"no first token", ollamafake.Behaviour{FirstGap: 2 * time.Second}, ollama.Timeouts{Connect: time.Second, FirstToken: 100 * time.Millisecond, Idle: 5 * time.Second}, "", ollama.ClassFirstTokenTimeout, 0, true, true},
		{"connection refused", ollamafake.Behaviour{}, fast, refused, ollama.ClassConnect, 0, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.addr
			if addr == "" {
				fake := ollamafake.StartT(t, tt.behaviour)
				addr = fake.Addr()
			}
			c := ollama.New(tt.timeouts)
			defer c.Close()
			texts := 0
			_, err := c.Stream(context.Background(), addr, "/api/chat", &ollama.ChatRequest{Model: "fake", Stream: true}, func(string) error {
				texts++
				return nil
			})
			var oerr *ollama.Error
			require.True(t, errors.As(err, &oerr), "%v", err)
			require.Equal(t, tt.class, oerr.Class, "%v", err)
			require.Equal(t, tt.tokens, oerr.Tokens)
			require.Equal(t, tt.tokens, texts)
			require.Equal(t, tt.retryable, oerr.Retryable())
			require.Equal(t, tt.fault, oerr.NodeFault())
			require.Contains(t, err.Error(), addr, "the error names the node")
		})
	}
}

var fast = ollama.Timeouts{Connect: time.Second, FirstToken: 5 * time.Second, Idle: 5 * time.Second}

func TestStreamSuccessAndCallerCancel(t *testing.T) {
	fake := ollamafake.StartT(t, ollamafake.Behaviour{Tokens: 5})
	c := ollama.New(fast)
	defer c.Close()

	var got []string
	final, err := c.Stream(context.Background(), fake.Addr(), "/api/generate", &ollama.GenerateRequest{Model: "fake", Stream: true}, func(s string) error {
		got = append(got, s)
		return nil
	})
	require.NoError(t, err)
	require.Len(t, got, 5)
	require.True(t, final.Done)
	require.EqualValues(t, 5, final.EvalCount)

	slow := ollamafake.StartT(t, ollamafake.Behaviour{StallAfter: 1})
	ctx, cancel := context.WithCancel(context.Background())
	_, err = c.Stream(ctx, slow.Addr(), "/api/chat", &ollama.ChatRequest{Model: "fake", Stream: true}, func(string) error {
		cancel() // the caller leaves after the first token
		return nil
	})
	var oerr *ollama.Error
	require.True(t, errors.As(err, &oerr))
	require.Equal(t, ollama.ClassCanceled, oerr.Class)
	require.False(t, oerr.NodeFault(), "a caller leaving is not the node's fault")
	require.Eventually(t, func() bool { return slow.Cancelled() == 1 }, 5*time.Second, 10*time.Millisecond, "the node sees the request end")
}
