package ollamapool_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
)

func TestFiftyConcurrentChatsSpreadOverTwoRealNodes(t *testing.T) {
	a, b := tinyNode(t), tinyNode(t)
	f := newFixture(t, nil)
	idA, idB := f.publish(a.Addr(), "tiny:latest"), f.publish(b.Addr(), "tiny:latest")

	// Load the model on both nodes first, as --ollamapool.warm-models would: otherwise the
	// node that finishes its cold load first rightly takes most of a short burst.
	warm, err := f.client.WarmModel(context.Background(), &ollamapoolv1.WarmModelRequest{Model: "tiny", NodeCount: 2})
	require.NoError(t, err)
	require.Len(t, warm.GetWarmedNodes(), 2)

	const requests, maxTokens = 50, 24
	results := make([]chatResult, requests)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	parallel(requests, func(i int) {
		results[i] = f.chat(ctx, fmt.Sprintf("question %d", i), maxTokens, nil)
	})

	served := map[string]int{}
	for i, r := range results {
		require.NoError(t, r.err, "request %d", i)
		require.NotNil(t, r.done, "request %d ended without its terminal event", i)
		// The tiny model never stops early, so the node's own count must equal both the
		// limit and what the pool relayed.
		require.EqualValues(t, maxTokens, r.done.GetUsage().GetCompletionTokens(), "request %d", i)
		require.Equal(t, maxTokens, r.chunks, "request %d: chunks relayed vs tokens the node counted", i)
		require.Positive(t, r.done.GetUsage().GetPromptTokens())
		require.Equal(t, "length", r.done.GetDoneReason())
		served[r.done.GetRoute().GetBackend()]++
	}
	t.Logf("served %v", served)
	require.ElementsMatch(t, []string{idA, idB}, keys(served), "both nodes must serve: %v", served)
	require.Greater(t, served[idA], requests/5, "the spread is lopsided: %v", served)
	require.Greater(t, served[idB], requests/5, "the spread is lopsided: %v", served)
}
