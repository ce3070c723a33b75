package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// composeRun is one docker-compose project of deploy/docker-compose.yml with its own images,
// named after the run so that parallel runs and leftovers of other runs never mix.
type composeRun struct {
	t       *testing.T
	project string
	file    string
	root    string
	env     []string // extra environment of docker-compose and of the image build
	images  []string
}

// dockerAvailable says why the compose test cannot run here, or "" when it can.
func dockerAvailable() string {
	if os.Getenv("SOLLOL_SKIP_DOCKER") == "1" {
		return "SOLLOL_SKIP_DOCKER=1"
	}
	for _, bin := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is not installed"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Sprintf("no Docker engine answers (docker version: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	return ""
}

func repoRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func newComposeRun(t *testing.T) *composeRun {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	root := repoRoot(t)
	r := &composeRun{
		t:       t,
		project: "sollole2e" + id,
		file:    filepath.Join(root, "deploy", "docker-compose.yml"),
		root:    root,
	}
	r.images = []string{"sollol-e2e-" + id + ":test", "sollol-e2e-etcd-" + id + ":test"}
	r.env = []string{
		"SOLLOL_IMAGE=" + r.images[0],
		"SOLLOL_ETCD_IMAGE=" + r.images[1],
		"SOLLOL_BIND=127.0.0.1",
		// Ephemeral host ports: a CI machine may use 8000 or 50051 for something else.
		"SOLLOL_ROUTER_HTTP_PORTS=",
		"SOLLOL_ROUTER_GRPC_PORTS=",
		"SOLLOL_LOG_LEVEL=info",
	}
	return r
}

// run runs a command with the run's environment and returns its combined output.
func (r *composeRun) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), r.env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (r *composeRun) must(timeout time.Duration, name string, args ...string) string {
	r.t.Helper()
	out, err := r.run(timeout, name, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *composeRun) compose(timeout time.Duration, args ...string) string {
	r.t.Helper()
	return r.must(timeout, "docker-compose", append([]string{"-p", r.project, "-f", r.file}, args...)...)
}

// buildImages builds the sollol image and the local etcd image the way `make images
// etcd-image` does, under the run's own tags.
func (r *composeRun) buildImages() {
	r.t.Helper()
	r.env = append(r.env, "IMAGE_LABELS=sollol.e2e.run="+r.project)
	r.must(10*time.Minute, filepath.Join(r.root, "deploy", "build-images.sh"), "--etcd")
}

// down removes everything of the run: containers, networks, volumes, images.
func (r *composeRun) down() error {
	_, err := r.run(3*time.Minute, "docker-compose", "-p", r.project, "-f", r.file, "down", "-v", "--rmi", "local", "--remove-orphans", "-t", "10")
	for _, img := range r.images {
		if out, rmErr := r.run(time.Minute, "docker", "image", "rm", "-f", img); rmErr != nil && !strings.Contains(out, "No such image") {
			err = rmErr
		}
	}
	return err
}

// leftovers lists what of the run still exists.
func (r *composeRun) leftovers() []string {
	var left []string
	label := "label=com.docker.compose.project=" + r.project
	for _, q := range [][]string{
		{"ps", "-aq", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
		{"images", "-q", "--filter", "label=sollol.e2e.run=" + r.project},
	} {
		out, err := r.run(time.Minute, "docker", q...)
		if err != nil {
			left = append(left, err.Error())
			continue
		}
		for _, f := range strings.Fields(out) {
			left = append(left, q[0]+" "+f)
		}
	}
	return left
}

// container is one container of the run.
type container struct {
	Name, Service, Status string
}

func (c container) running() bool { return strings.HasPrefix(c.Status, "Up") }
func (c container) healthy() bool { return strings.Contains(c.Status, "(healthy)") }

func (r *composeRun) containers() []container {
	r.t.Helper()
	out := r.must(time.Minute, "docker", "ps", "-a", "--filter", "label=com.docker.compose.project="+r.project,
		"--format", `{{.Names}}|{{.Label "com.docker.compose.service"}}|{{.Status}}`)
	var cs []container
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if parts := strings.SplitN(line, "|", 3); len(parts) == 3 {
			cs = append(cs, container{Name: parts[0], Service: parts[1], Status: parts[2]})
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs
}

func (r *composeRun) running(service string) []container {
	var out []container
	for _, c := range r.containers() {
		if c.Service == service && c.running() {
			out = append(out, c)
		}
	}
	return out
}

// waitHealthy polls until each service has want[service] running containers, all healthy.
func (r *composeRun) waitHealthy(want map[string]int, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		got := map[string]int{}
		ok := true
		var desc []string
		for _, c := range r.containers() {
			if !c.running() {
				continue
			}
			got[c.Service]++
			if !c.healthy() {
				ok = false
			}
			desc = append(desc, c.Name+": "+c.Status)
		}
		for s, n := range want {
			if got[s] != n {
				ok = false
			}
		}
		if ok {
			return
		}
		last = strings.Join(desc, "; ")
		time.Sleep(time.Second)
	}
	r.t.Fatalf("services not healthy at %v within %v; last seen: %s\n%s", want, timeout, last, r.logs())
}

func (r *composeRun) logs() string {
	out, _ := r.run(time.Minute, "docker-compose", "-p", r.project, "-f", r.file, "logs", "--no-color", "--tail", "30")
	return out
}

// hostPort is the 127.0.0.1 address a container's port is published on.
func (r *composeRun) hostPort(name, port string) string {
	r.t.Helper()
	out := strings.TrimSpace(r.must(time.Minute, "docker", "port", name, port))
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "127.0.0.1:") {
			return line
		}
	}
	r.t.Fatalf("%s: port %s not published on 127.0.0.1: %q", name, port, out)
	return ""
}

func (r *composeRun) containerIP(name string) string {
	r.t.Helper()
	return strings.TrimSpace(r.must(time.Minute, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name))
}

// registrations lists the addresses under sollol/v1/services/<service>/ in the run's etcd,
// read with the etcdctl of the etcd container.
func (r *composeRun) registrations(service string) []string {
	r.t.Helper()
	etcd := r.running("etcd")
	if len(etcd) != 1 {
		r.t.Fatalf("want one running etcd, have %v", etcd)
	}
	prefix := "sollol/v1/services/" + service + "/"
	out := r.must(time.Minute, "docker", "exec", etcd[0].Name, "etcdctl", "get", "--prefix", "--keys-only", prefix)
	var addrs []string
	for _, line := range strings.Fields(out) {
		if strings.HasPrefix(line, prefix) {
			addrs = append(addrs, strings.TrimPrefix(line, prefix))
		}
	}
	sort.Strings(addrs)
	return addrs
}

// waitRegistrations polls until service has n registrations and returns them.
func (r *composeRun) waitRegistrations(service string, n int, timeout time.Duration) []string {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []string
	for time.Now().Before(deadline) {
		if got = r.registrations(service); len(got) == n {
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.t.Fatalf("%s: want %d registrations in etcd within %v, have %v", service, n, timeout, got)
	return nil
}

// networkGateway is the host's address on the run's compose network.
func (r *composeRun) networkGateway() string {
	r.t.Helper()
	out := strings.TrimSpace(r.must(time.Minute, "docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}} {{end}}", r.project+"_default"))
	for _, f := range strings.Fields(out) {
		if ip := net.ParseIP(f); ip != nil && ip.To4() != nil {
			return f
		}
	}
	r.t.Fatalf("no IPv4 gateway on network %s_default: %q", r.project, out)
	return ""
}

// relay forwards TCP connections from listen to target until closed. The test's Ollama
// listens on loopback only; the relay makes it reachable on the compose network's gateway
// address, which only this machine and its containers can reach.
type relay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startRelay(t *testing.T, listenHost, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(listenHost, "0"))
	if err != nil {
		t.Fatalf("relay on %s: %v", listenHost, err)
	}
	rl := &relay{ln: ln, conns: map[net.Conn]struct{}{}}
	rl.wg.Add(1)
	go func() {
		defer rl.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rl.wg.Add(1)
			go func() {
				defer rl.wg.Done()
				rl.forward(c, target)
			}()
		}
	}()
	t.Cleanup(rl.close)
	return rl
}

func (rl *relay) addr() string { return rl.ln.Addr().String() }

func (rl *relay) track(c net.Conn, add bool) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if add {
		rl.conns[c] = struct{}{}
	} else {
		delete(rl.conns, c)
	}
}

func (rl *relay) forward(in net.Conn, target string) {
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	rl.track(in, true)
	rl.track(out, true)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
	in.Close()
	out.Close()
	rl.track(in, false)
	rl.track(out, false)
}

func (rl *relay) close() {
	rl.ln.Close()
	rl.mu.Lock()
	for c := range rl.conns {
		c.Close()
	}
	rl.mu.Unlock()
	rl.wg.Wait()
}

// chatResult is one streamed chat through a router's Ollama-compatible API.
type chatResult struct {
	router       string
	start, end   time.Time
	chunks       int
	err          error
	routeBackend string
}

// streamChat sends a streamed /api/chat to the router at hostPort and reads it to the end.
func streamChat(ctx context.Context, client *http.Client, hostPort, model string) (res chatResult) {
	res = chatResult{router: hostPort, start: time.Now()}
	defer func() { res.end = time.Now() }()
	body, _ := json.Marshal(map[string]any{
		"model":    model,
		"messages": []map[string]string{{"role": "user", "content": "Say something."}},
		"stream":   true,
		"options":  map[string]any{"num_predict": 24},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+hostPort+"/api/chat", bytes.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		res.err = fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))
		return res
	}
	res.routeBackend = resp.Header.Get("X-Sollol-Backend")
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Done  bool   `json:"done"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			res.err = fmt.Errorf("bad stream line %q: %w", sc.Text(), err)
			return res
		}
		if line.Error != "" {
			res.err = fmt.Errorf("stream error after %d chunks: %s", res.chunks, line.Error)
			return res
		}
		if line.Done {
			return res
		}
		res.chunks++
	}
	if err := sc.Err(); err != nil {
		res.err = fmt.Errorf("stream broken after %d chunks: %w", res.chunks, err)
	} else {
		res.err = fmt.Errorf("stream ended after %d chunks without done", res.chunks)
	}
	return res
}

// waitChat polls until a chat through the router succeeds.
func waitChat(t *testing.T, client *http.Client, hostPort, model string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last chatResult
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		last = streamChat(ctx, client, hostPort, model)
		cancel()
		if last.err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no chat through router %s succeeded within %v; last: %v", hostPort, timeout, last.err)
}

// diagnose keeps what explains a stalled run in a folder that outlives the test: the Go
// goroutine dump of every running router and pool replica (SIGQUIT makes a Go program print
// it and exit), each container's log, and the Ollama log at ollamaLog.
func (r *composeRun) diagnose(ollamaLog string, names ...string) string {
	dir, err := os.MkdirTemp("", "sollol-compose-diag-"+r.project+"-")
	if err != nil {
		return "(no folder: " + err.Error() + ")"
	}
	var all []string
	for _, c := range r.containers() {
		if c.running() && (c.Service == "router" || c.Service == "ollamapool") {
			_, _ = r.run(time.Minute, "docker", "kill", "-s", "QUIT", c.Name)
		}
		all = append(all, c.Name)
	}
	time.Sleep(3 * time.Second) // the dump is written before the process exits
	for _, name := range all {
		out, _ := r.run(time.Minute, "docker", "logs", "-t", name)
		_ = os.WriteFile(filepath.Join(dir, name+".log"), []byte(out), 0o644)
	}
	if b, err := os.ReadFile(ollamaLog); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "ollama.log"), b, 0o644)
	}
	_ = os.WriteFile(filepath.Join(dir, "focus.txt"), []byte(strings.Join(names, "\n")+"\n"), 0o644)
	return dir
}
