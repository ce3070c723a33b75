package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// TestComposeScaleKillAndTearDown runs deploy/docker-compose.yml for real: it builds the
// images (sollol and a local etcd built from its Go module: nothing is pulled), starts the
// project, scales the pool to 3 and the router to 2, streams chats through both routers' published
// ports to a real Ollama serving the tiny model, kills one pool container and one router container
// while chats run, shows that the rest keep serving, scales down and removes everything.
func TestComposeScaleKillAndTearDown(t *testing.T) {
	if why := dockerAvailable(); why != "" {
		t.Skipf("compose test skipped: %s (it needs a Docker engine and docker-compose; SOLLOL_SKIP_DOCKER=1 skips it on purpose)", why)
	}
	const model = "tiny"
	srv := ollamatest.Start(t, ollamatest.WithNumParallel(4), ollamatest.WithKeepAlive("10m"))
	srv.CreateTinyModel(t, model)

	r := newComposeRun(t)
	t.Logf("compose project %s", r.project)
	// Registered before anything is created, so a failure at any step still cleans up.
	t.Cleanup(func() {
		if err := r.down(); err != nil {
			t.Errorf("tear down: %v", err)
		}
		if left := r.leftovers(); len(left) > 0 {
			t.Errorf("left behind after tear down: %v", left)
		}
	})

	began := time.Now()
	r.buildImages()
	t.Logf("images built in %v", time.Since(began).Round(time.Second))

	// etcd first: it creates the project's network, whose gateway is the host's address on
	// it. The Ollama on loopback is relayed there, and discovery is told about it.
	r.compose(3*time.Minute, "up", "-d", "etcd")
	gw := r.networkGateway()
	ollama := startRelay(t, gw, srv.Addr())
	r.env = append(r.env, "SOLLOL_OLLAMA_NODES="+ollama.addr())
	r.compose(3*time.Minute, "up", "-d")
	r.waitHealthy(map[string]int{"etcd": 1, "discovery": 1, "coordinator": 1, "ollamapool": 1, "router": 1}, 2*time.Minute)

	r.compose(3*time.Minute, "up", "-d", "--scale", "ollamapool=3", "--scale", "router=2")
	r.waitHealthy(map[string]int{"etcd": 1, "discovery": 1, "coordinator": 1, "ollamapool": 3, "router": 2}, 2*time.Minute)
	t.Logf("scaled up and healthy after %v", time.Since(began).Round(time.Second))

	// Each replica registered itself under its own container address.
	for _, svc := range []string{"ollamapool", "router"} {
		var want []string
		for _, c := range r.running(svc) {
			want = append(want, r.containerIP(c.Name))
		}
		got := r.waitRegistrations(svc, len(want), 30*time.Second)
		for _, ip := range want {
			if !slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, ip+":") }) {
				t.Fatalf("%s: container address %s is not registered; etcd has %v", svc, ip, got)
			}
		}
	}

	routers := r.running("router")
	keep, victim := routers[0], routers[1]
	keepAddr, victimAddr := r.hostPort(keep.Name, "8000"), r.hostPort(victim.Name, "8000")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	waitChat(t, client, keepAddr, model, 90*time.Second)
	waitChat(t, client, victimAddr, model, 30*time.Second)

	// Load on both routers; kill one pool replica and one router while it runs.
	var (
		mu      sync.Mutex
		results []chatResult
	)
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for i := range 6 {
		addr := keepAddr
		if i%2 == 1 {
			addr = victimAddr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 500 && ctx.Err() == nil; n++ {
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				res := streamChat(rctx, client, addr, model)
				cancel()
				if ctx.Err() != nil {
					return // stopped by the test, not a failure
				}
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
				if res.err != nil {
					time.Sleep(200 * time.Millisecond) // a dead router refuses at once
				}
			}
		}()
	}
	snapshot := func() []chatResult {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(results)
	}
	waitFor(t, 60*time.Second, "requests before the kill", func() bool { return len(snapshot()) >= 12 })

	pools := r.running("ollamapool")
	poolVictim := pools[len(pools)-1]
	poolVictimIP := r.containerIP(poolVictim.Name)
	killedAt := time.Now()
	r.must(time.Minute, "docker", "kill", poolVictim.Name)
	r.must(time.Minute, "docker", "kill", victim.Name)
	t.Logf("killed %s and %s", poolVictim.Name, victim.Name)

	// The killed pool replica's lease expires and its registration goes; the killed router's too.
	left := r.waitRegistrations("ollamapool", 2, 45*time.Second)
	if slices.ContainsFunc(left, func(a string) bool { return strings.HasPrefix(a, poolVictimIP+":") }) {
		t.Fatalf("the killed pool replica %s is still registered: %v", poolVictimIP, left)
	}
	r.waitRegistrations("router", 1, 45*time.Second)
	settledAt := time.Now()
	servedAfterSettle := func() bool {
		n := 0
		for _, res := range snapshot() {
			if res.router == keepAddr && res.start.After(settledAt) {
				n++
			}
		}
		return n >= 12
	}
	if !poll(60*time.Second, servedAfterSettle) {
		for _, res := range snapshot() {
			if res.router == keepAddr && res.end.After(killedAt) {
				t.Logf("chat via %s from %v to %v after the kill: %d chunks, err %v", res.router,
					res.start.Sub(killedAt).Round(time.Millisecond), res.end.Sub(killedAt).Round(time.Millisecond), res.chunks, res.err)
			}
		}
		t.Logf("diagnostics (goroutine dumps of the surviving replicas, Ollama's log) in %s", r.diagnose(srv.LogPath(), keep.Name))
		t.Fatalf("timed out after 60s waiting for requests on the surviving router after its view settled")
	}
	stopLoad()
	wg.Wait()

	var before, keepDuring, keepAfter, victimAfter, failed []chatResult
	for _, res := range results {
		switch {
		case res.end.Before(killedAt):
			before = append(before, res)
		case res.router == keepAddr && res.start.After(settledAt):
			keepAfter = append(keepAfter, res)
		case res.router == keepAddr:
			keepDuring = append(keepDuring, res)
		default:
			victimAfter = append(victimAfter, res)
		}
		if res.err != nil {
			failed = append(failed, res)
		}
	}
	t.Logf("chats: %d before the kill, %d on the surviving router during the transition, %d after, %d on the killed router after the kill; %d failed (killed %v after start, settled %v later)",
		len(before), len(keepDuring), len(keepAfter), len(victimAfter), len(failed),
		killedAt.Sub(began).Round(time.Second), settledAt.Sub(killedAt).Round(time.Second))
	for _, res := range before {
		if res.err != nil {
			t.Errorf("a chat before any kill failed via %s: %v", res.router, res.err)
		}
	}
	// Streams in flight on the killed pool replica may fail; the surviving router must serve
	// every request that starts once the dead replica is out of the registry.
	for _, res := range keepDuring {
		if res.err != nil {
			t.Logf("during the transition (allowed): via %s: %v", res.router, res.err)
		}
	}
	for _, res := range keepAfter {
		if res.err != nil {
			t.Errorf("a chat on the surviving router after the kill failed: %v", res.err)
		}
	}
	// Requests to the killed router cannot succeed once it is gone.
	for _, res := range victimAfter {
		if res.err == nil && res.start.After(killedAt.Add(time.Second)) {
			t.Errorf("a chat to the killed router %s started after the kill succeeded", res.router)
		}
	}
	for range 3 {
		if res := streamChat(context.Background(), client, keepAddr, model); res.err != nil {
			t.Fatalf("a new chat after the kill failed: %v", res.err)
		}
	}

	// Scale down: the stopped replicas deregister as they stop.
	r.compose(3*time.Minute, "up", "-d", "--scale", "ollamapool=1", "--scale", "router=1")
	r.waitHealthy(map[string]int{"etcd": 1, "discovery": 1, "coordinator": 1, "ollamapool": 1, "router": 1}, 2*time.Minute)
	r.waitRegistrations("ollamapool", 1, 30*time.Second)
	r.waitRegistrations("router", 1, 30*time.Second)
	last := r.running("router")[0]
	waitChat(t, client, r.hostPort(last.Name, "8000"), model, 60*time.Second)

	if err := r.down(); err != nil {
		t.Fatalf("tear down: %v", err)
	}
	if left := r.leftovers(); len(left) > 0 {
		t.Fatalf("left behind after tear down: %v", left)
	}
	t.Logf("whole run %v", time.Since(began).Round(time.Second))
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	if !poll(timeout, ok) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// poll reports whether ok became true within timeout.
func poll(timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}
