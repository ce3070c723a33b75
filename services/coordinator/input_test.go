package coordinator_test

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

func TestBadRequestsNameTheField(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	ctx := ctxTimeout(t, time.Minute)
	user := []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "hi"}}
	cases := []struct {
		name  string
		req   *coordinatorv1.ChatRequest
		field string
	}{
		{"no model", &coordinatorv1.ChatRequest{Messages: user}, "model"},
		{"no messages", &coordinatorv1.ChatRequest{Model: "tiny"}, "messages"},
		{"role unset", &coordinatorv1.ChatRequest{Model: "tiny", Messages: []*commonv1.ChatMessage{{Content: "x"}}}, "messages[0].role"},
		{"empty message", &coordinatorv1.ChatRequest{Model: "tiny", Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER}}}, "messages[0].content"},
		{"negative temperature", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user, Options: &commonv1.GenerationOptions{Temperature: ptr(-1.0)}}, "options.temperature"},
		{"top_p zero", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user, Options: &commonv1.GenerationOptions{TopP: ptr(0.0)}}, "options.top_p"},
		{"zero max_tokens", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user, Options: &commonv1.GenerationOptions{MaxTokens: ptr(int32(0))}}, "options.max_tokens"},
		{"max_tokens beyond the context", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user,
			Options: &commonv1.GenerationOptions{MaxTokens: ptr(int32(300)), ContextSize: ptr(int32(128))}}, "options.max_tokens"},
		{"unknown format", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user, Options: &commonv1.GenerationOptions{Format: "yaml"}}, "options.format"},
		{"empty stop", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user, Options: &commonv1.GenerationOptions{Stop: []string{""}}}, "options.stop[0]"},
		{"priority", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user, Priority: 11}, "priority"},
		{"context beyond the model", &coordinatorv1.ChatRequest{Model: "tiny", Messages: user,
			Options: &commonv1.GenerationOptions{ContextSize: ptr(int32(100000))}}, "options.context_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := r.chatReq(ctx, c.req)
			st := requireStatus(t, res.err, codes.InvalidArgument, "INVALID_ARGUMENT")
			require.Equal(t, c.field, fieldOf(st), st.Message())
		})
	}
	require.Empty(t, w.llamaProcesses("tiny"), "bad requests start nothing")
}

func TestUnknownModelSaysWhereItLookedAndWhatExists(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	dir := t.TempDir()
	r := w.start(w.config(func(c *coordinator.Config) { c.ModelDirs = []string{dir} }))
	res := r.chat(ctxTimeout(t, time.Minute), "ghost", "hi", 2)
	st := requireStatus(t, res.err, codes.NotFound, "MODEL_NOT_FOUND")
	require.Contains(t, st.Message(), "folder "+dir+" (no ghost.gguf)")
	require.Contains(t, st.Message(), "the name mapping (has tiny)")
	require.Contains(t, st.Message(), "available: tiny")

	es, err := r.client.EnsureCoordinator(ctxTimeout(t, time.Minute), &coordinatorv1.EnsureCoordinatorRequest{Model: "../etc/passwd"})
	require.NoError(t, err)
	_, err = es.Recv()
	st = requireStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	require.Equal(t, "model", fieldOf(st))
}

func TestNoRPCBackendsIsAnExplicitError(t *testing.T) {
	w := newWorld(t, worldOptions{Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", "hi", 2)
	st := requireStatus(t, res.err, codes.FailedPrecondition, "NO_RPC_BACKENDS")
	require.Contains(t, st.Message(), "discovery.rpc-backends", "it says what to configure")
}

func TestModelLargerThanEveryBackendIsRefusedWithTheFigures(t *testing.T) {
	w := newWorld(t, worldOptions{Models: []string{"tiny"}})
	if w.real {
		t.Skip("a real rpc-server reports the machine's memory, which always fits the tiny model")
	}
	small := newRPC(t, rpcserverDevice(2<<20))
	w.startDiscovery([]string{small.Addr()})
	r := w.start(w.config(nil))
	res := r.chat(ctxTimeout(t, time.Minute), "tiny", "hi", 2)
	st := requireStatus(t, res.err, codes.FailedPrecondition, "MODEL_DOES_NOT_FIT")
	require.Contains(t, st.Message(), "needs about")
	require.Contains(t, st.Message(), small.Addr()+" 2.0 MiB free")
	md := infoOf(st).GetMetadata()
	require.NotEmpty(t, md["needed_bytes"])
	require.Equal(t, "2097152", md["available_bytes"])
}

func TestConfigurationErrorsNameTheFlag(t *testing.T) {
	base := func() coordinator.Config {
		var c coordinator.Config
		c.RegisterFlags(flag.NewFlagSet("c", flag.ContinueOnError))
		c.DataDir = t.TempDir()
		return c
	}
	w := newWorld(t, worldOptions{})
	for flagName, mutate := range map[string]func(*coordinator.Config){
		"coordinator.models":       func(c *coordinator.Config) { c.Models = []string{"no-equals"} },
		"coordinator.cache-budget": func(c *coordinator.Config) { c.CacheBudget = "lots" },
		"coordinator.parallel":     func(c *coordinator.Config) { c.Parallel = 0 },
		"coordinator.llama-server": func(c *coordinator.Config) { c.LlamaServer = "" },
		"coordinator.lease-ttl":    func(c *coordinator.Config) { c.LeaseTTL = 0 },
	} {
		c := base()
		mutate(&c)
		_, err := coordinator.New(c, grpcserver.Deps{Logger: quietLog(), Etcd: w.cluster.Client()})
		require.ErrorContains(t, err, flagName)
	}
	c := base()
	c.CacheBudget = "1.5GiB"
	_, err := coordinator.New(c, grpcserver.Deps{Logger: quietLog(), Etcd: w.cluster.Client()})
	require.NoError(t, err)
}
