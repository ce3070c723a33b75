package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/registry"
)

// childEnv, when set, makes the test binary run a coordinator-manager (runChild) instead of
// the tests: a manager in a process of its own, which a test can kill with SIGKILL.
const childEnv = "SOLLOL_COORDINATOR_TEST_CHILD"

// childSpec is what a child manager runs with.
type childSpec struct {
	Etcd   string
	Config coordinator.Config
}

// runChild runs a manager until SIGTERM, printing "READY <grpc address> <instance>" once it
// serves.
func runChild(spec string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cli, err := registry.Connect(ctx, []string{s.Etcd}, 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc, err := coordinator.New(s.Config, grpcserver.Deps{Logger: log, Etcd: cli})
	if err == nil {
		err = svc.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("READY %s %s\n", svc.Addr(), svc.Instance())
	<-ctx.Done()
	_ = svc.Stop(context.Background())
	return 0
}
