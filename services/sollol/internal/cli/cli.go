// Package cli holds the sollol client commands — chat, backends, route, stats — that talk to
// a running mesh over its public gRPC APIs.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// Command is one client command.
type Command struct {
	Name  string
	Usage string
	Run   func(ctx context.Context, env *Env, args []string) error
}

// Env is what a command writes to and where it connects.
type Env struct {
	Stdout, Stderr io.Writer
	LookupEnv      func(string) (string, bool)
}

// Commands lists the client commands.
func Commands() []Command {
	return []Command{chatCommand(), backendsCommand(), routeCommand(), statsCommand(), probeCommand()}
}

// Find returns the command called name.
func Find(name string) (Command, bool) {
	for _, c := range Commands() {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// Main runs a client command and returns the exit code: 0, 1 when the call failed, 2 for a
// usage error. Errors are one line naming the problem.
func Main(c Command, args []string, env *Env) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := c.Run(ctx, env, args)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(env.Stderr, "sollol %s: %v\n", c.Name, err)
		return 2
	default:
		if st, ok := status.FromError(err); ok {
			err = fmt.Errorf("%s: %s", st.Code(), st.Message())
		}
		fmt.Fprintf(env.Stderr, "sollol %s: %v\n", c.Name, err)
		return 1
	}
}

type usageError struct{ error }

// newFlags returns a flag set for a command with the common --addr and --json flags, with
// defaults that SOLLOL_* variables override.
func newFlags(env *Env, name, usage, defaultAddr, addrEnv string) (*flag.FlagSet, *string, *bool, *time.Duration) {
	fs := flag.NewFlagSet("sollol "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: sollol %s\n", usage)
		fs.PrintDefaults()
	}
	if v, ok := env.LookupEnv(addrEnv); ok && v != "" {
		defaultAddr = v
	}
	addr := fs.String("addr", defaultAddr, "gRPC address of the service (env "+addrEnv+")")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the service")
	return fs, addr, asJSON, timeout
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func gib(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

// parseHint turns --hint into the API's route hint.
func parseHint(word string) (commonv1.RouteHint, error) {
	h, ok := map[string]commonv1.RouteHint{"auto": commonv1.RouteHint_ROUTE_HINT_AUTO, "pool": commonv1.RouteHint_ROUTE_HINT_POOL, "shard": commonv1.RouteHint_ROUTE_HINT_SHARD}[word]
	if !ok {
		return 0, usageError{fmt.Errorf("--hint %q is not auto, pool or shard", word)}
	}
	return h, nil
}
