package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// probeCommand is the container health check: an image built FROM scratch has no shell or
// curl, so the binary checks itself. It GETs a URL (by default /readyz on this process's own
// --http-addr, read from SOLLOL_HTTP_ADDR) and exits 0 on a 2xx answer, 1 otherwise.
func probeCommand() Command {
	const usage = `probe [--timeout 3s] [URL]   (default: http://<SOLLOL_HTTP_ADDR>/readyz)`
	return Command{Name: "probe", Usage: usage, Run: func(ctx context.Context, env *Env, args []string) error {
		fs := flag.NewFlagSet("sollol probe", flag.ContinueOnError)
		fs.SetOutput(env.Stderr)
		fs.Usage = func() {
			fmt.Fprintf(env.Stderr, "usage: sollol %s\n", usage)
			fs.PrintDefaults()
		}
		timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
		if err := parse(fs, args); err != nil {
			return err
		}
		var url string
		switch fs.NArg() {
		case 0:
			addr := "127.0.0.1:8000"
			if v, ok := env.LookupEnv("SOLLOL_HTTP_ADDR"); ok && v != "" {
				addr = v
			}
			url = "http://" + localAddr(addr) + "/readyz"
		case 1:
			url = fs.Arg(0)
			if !strings.Contains(url, "://") {
				url = "http://" + url
			}
		default:
			return usageError{fmt.Errorf("at most one URL")}
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return usageError{err}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		_, _ = env.Stdout.Write(body)
		return nil
	}}
}

// localAddr turns a listen address into one this machine can dial: a wildcard or empty host
// becomes 127.0.0.1.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
