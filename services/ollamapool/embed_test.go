package ollamapool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
)

// Many inputs are split over the nodes and come back in input order: each vector must match
// what a node gives for that input alone.
func TestEmbedSpreadsInputsAndKeepsTheirOrder(t *testing.T) {
	a, b := tinyNode(t), tinyNode(t)
	f := newFixture(t, nil)
	idA, idB := f.publish(a.Addr(), "tiny:latest"), f.publish(b.Addr(), "tiny:latest")

	inputs := make([]string, 10)
	for i := range inputs {
		inputs[i] = fmt.Sprintf("input number %d says %s", i, string(rune('a'+i)))
	}
	resp, err := f.client.Embed(context.Background(), &ollamapoolv1.EmbedRequest{Model: "tiny", Inputs: inputs, Truncate: true})
	require.NoError(t, err)
	require.Len(t, resp.GetEmbeddings(), len(inputs))
	require.ElementsMatch(t, []string{idA, idB}, resp.GetRoute().GetTried(), "both nodes take a share")
	require.Positive(t, resp.GetUsage().GetPromptTokens())

	for i, in := range inputs {
		want := embedDirect(t, a.URL(), in)
		got := resp.GetEmbeddings()[i].GetValues()
		require.Len(t, got, len(want), "input %d", i)
		require.InDeltaSlice(t, want, got, 1e-3, "input %d came back out of order", i)
	}
}

func embedDirect(t *testing.T, base, input string) []float64 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "tiny", "input": []string{input}})
	resp, err := http.Post(base+"/api/embed", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		Embeddings [][]float64 `json:"embeddings"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Embeddings[0]
}

func TestWarmModelLoadsItOnTheNodes(t *testing.T) {
	a, b := tinyNode(t), tinyNode(t)
	f := newFixture(t, nil)
	idA, idB := f.publish(a.Addr(), "tiny:latest"), f.publish(b.Addr(), "tiny:latest")
	resp, err := f.client.WarmModel(context.Background(), &ollamapoolv1.WarmModelRequest{Model: "tiny", NodeCount: 2, KeepAlive: durationpb.New(10 * time.Minute)})
	require.NoError(t, err)
	require.Empty(t, resp.GetFailedNodes())
	require.ElementsMatch(t, []string{idA, idB}, resp.GetWarmedNodes())
	for _, node := range []string{a.URL(), b.URL()} {
		require.Equal(t, []string{"tiny:latest"}, loadedModels(t, node), "warm-up must leave the model loaded on %s", node)
	}
}

func loadedModels(t *testing.T, base string) []string {
	t.Helper()
	resp, err := http.Get(base + "/api/ps")
	require.NoError(t, err)
	defer resp.Body.Close()
	var ps struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ps))
	var names []string
	for _, m := range ps.Models {
		names = append(names, m.Name)
	}
	return names
}
