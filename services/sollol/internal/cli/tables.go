package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
)

func backendsCommand() Command {
	const usage = "backends [--json]"
	return Command{Name: "backends", Usage: usage, Run: func(ctx context.Context, env *Env, args []string) error {
		fs, addr, asJSON, timeout := newFlags(env, "backends", usage, "127.0.0.1:50061", "SOLLOL_DISCOVERY_ADDR")
		if err := parse(fs, args); err != nil {
			return err
		}
		call := func(ctx context.Context, conn *grpc.ClientConn) (*discoveryv1.ListBackendsResponse, error) {
			return discoveryv1.NewDiscoveryServiceClient(conn).ListBackends(ctx, &discoveryv1.ListBackendsRequest{})
		}
		return query(ctx, env, *addr, *timeout, *asJSON, call, func(resp *discoveryv1.ListBackendsResponse) error {
			return backendsTable(env, resp)
		})
	}}
}

func backendsTable(env *Env, resp *discoveryv1.ListBackendsResponse) error {
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tADDRESS\tHEALTH\tVERSION\tFREE\tTOTAL\tMODELS\tLATENCY\tSOURCES")
	for _, b := range resp.GetBackends() {
		var models []string
		for _, m := range b.GetInstalledModels() {
			models = append(models, m.GetName())
		}
		version := b.GetVersion()
		if b.GetKind() == commonv1.BackendKind_BACKEND_KIND_RPC {
			version = "ggml-rpc " + b.GetProtocolVersion()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			word(b.GetKind().String(), "BACKEND_KIND_"), b.GetAddress(), word(b.GetHealth().String(), "HEALTH_STATE_"),
			dash(version), gib(b.GetCapacity().GetFreeBytes()), gib(b.GetCapacity().GetTotalBytes()),
			dash(strings.Join(models, ",")), b.GetLatency().AsDuration(), strings.Join(b.GetSources(), ","))
	}
	if len(resp.GetBackends()) == 0 {
		fmt.Fprintln(tw, "(no backends: add --discovery.ollama-nodes or --discovery.rpc-backends to the mesh)")
	}
	return tw.Flush()
}

func routeCommand() Command {
	const usage = "route -m MODEL [--context N] [--hint auto|pool|shard] [--json]"
	return Command{Name: "route", Usage: usage, Run: func(ctx context.Context, env *Env, args []string) error {
		fs, addr, asJSON, timeout := newFlags(env, "route", usage, "127.0.0.1:50051", "SOLLOL_ROUTER_ADDR")
		model := fs.String("m", "", "model name (required)")
		contextSize := fs.Int("context", 0, "context size in tokens (0: the model's default)")
		hint := fs.String("hint", "auto", "path: auto, pool or shard")
		if err := parse(fs, args); err != nil {
			return err
		}
		if *model == "" {
			return usageError{fmt.Errorf("-m MODEL is required")}
		}
		h, err := parseHint(*hint)
		if err != nil {
			return err
		}
		call := func(ctx context.Context, conn *grpc.ClientConn) (*routerv1.RouteResponse, error) {
			return routerv1.NewRouterServiceClient(conn).Route(ctx, &routerv1.RouteRequest{Model: *model, ContextSize: int32(*contextSize), Hint: h})
		}
		return query(ctx, env, *addr, *timeout, *asJSON, call, func(resp *routerv1.RouteResponse) error {
			return routeTable(env, *model, resp.GetDecision())
		})
	}}
}

func routeTable(env *Env, model string, d *routerv1.Decision) error {
	size := d.GetModelSize()
	guess := ""
	if size.GetIsGuess() {
		guess = " (a guess)"
	}
	fmt.Fprintf(env.Stdout, "model:    %s, needs %s by %s%s\n", model, gib(size.GetBytes()), word(size.GetSource().String(), "MODEL_SIZE_SOURCE_"), guess)
	fmt.Fprintf(env.Stdout, "mode:     task distribution %v, model sharding %v\n", d.GetMode().GetTaskDistribution(), d.GetMode().GetModelSharding())
	if d.GetError() != "" {
		fmt.Fprintf(env.Stdout, "decision: none — %s\n", d.GetError())
	} else {
		fmt.Fprintf(env.Stdout, "decision: %s — %s\n", word(d.GetPath().String(), "ROUTE_PATH_"), d.GetReason())
		fmt.Fprintf(env.Stdout, "fallback: %s\n", dash(word(d.GetFallback().String(), "ROUTE_PATH_")))
	}
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tAVAILABLE\tFREE\tBACKENDS\tREASON")
	for _, c := range d.GetCandidates() {
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", word(c.GetPath().String(), "ROUTE_PATH_"), c.GetAvailable(), gib(c.GetFreeBytes()), dash(strings.Join(c.GetBackends(), ",")), c.GetReason())
	}
	return tw.Flush()
}

func statsCommand() Command {
	const usage = "stats [--json]"
	return Command{Name: "stats", Usage: usage, Run: func(ctx context.Context, env *Env, args []string) error {
		fs, addr, asJSON, timeout := newFlags(env, "stats", usage, "127.0.0.1:50051", "SOLLOL_ROUTER_ADDR")
		if err := parse(fs, args); err != nil {
			return err
		}
		call := func(ctx context.Context, conn *grpc.ClientConn) (*routerv1.GetStatsResponse, error) {
			return routerv1.NewRouterServiceClient(conn).GetStats(ctx, &routerv1.GetStatsRequest{})
		}
		return query(ctx, env, *addr, *timeout, *asJSON, call, func(s *routerv1.GetStatsResponse) error {
			return statsTable(env, s)
		})
	}}
}

func statsTable(env *Env, s *routerv1.GetStatsResponse) error {
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\ttask distribution %v, model sharding %v\n", s.GetMode().GetTaskDistribution(), s.GetMode().GetModelSharding())
	fmt.Fprintf(tw, "requests\tpool %d, shard %d, in flight %d\n", s.GetRequests().GetPool(), s.GetRequests().GetShard(), s.GetInFlight())
	fmt.Fprintf(tw, "fallbacks\tpool→shard %d, shard→pool %d; %d moved to another replica\n", s.GetFallbacks().GetPoolToShard(), s.GetFallbacks().GetShardToPool(), s.GetReplicaRetries())
	var errs []string
	for code, n := range s.GetErrorsByCode() {
		errs = append(errs, fmt.Sprintf("%s %d", code, n))
	}
	fmt.Fprintf(tw, "errors\t%s\n", dash(strings.Join(errs, ", ")))
	if p := s.GetPool(); p != nil {
		fmt.Fprintf(tw, "pool\t%d replica(s), %d of %d Ollama nodes healthy\n", p.GetInstances(), p.GetNodesHealthy(), p.GetNodesPresent())
	} else {
		fmt.Fprintln(tw, "pool\toff")
	}
	if c := s.GetCoordinator(); c != nil {
		fmt.Fprintf(tw, "sharding\t%d coordinator-manager replica(s), %d of %d rpc-servers healthy, %s free\n",
			c.GetInstances(), s.GetRpc().GetBackendsHealthy(), s.GetRpc().GetBackendsPresent(), gib(s.GetRpc().GetFreeBytes()))
	} else {
		fmt.Fprintln(tw, "sharding\toff")
	}
	return tw.Flush()
}

// query dials addr, makes one call within timeout and prints its answer: as JSON when asked,
// else as table prints it.
func query[T proto.Message](ctx context.Context, env *Env, addr string, timeout time.Duration, asJSON bool,
	call func(context.Context, *grpc.ClientConn) (T, error), table func(T) error) error {
	conn, err := dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := call(ctx, conn)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(env.Stdout, resp)
	}
	return table(resp)
}

// word turns an enum name into its lower-case word ("HEALTH_STATE_DOWN" → "down").
func word(enum, prefix string) string {
	w := strings.ToLower(strings.TrimPrefix(enum, prefix))
	if w == "unspecified" {
		return ""
	}
	return w
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
