// Command rpc-server runs the rpc-server test double (package rpcserver) with the command line
// of llama.cpp's rpc-server, so a test can start either binary with the same arguments:
//
//	rpc-server [-H 127.0.0.1] [-p 50052] [-m MB[,MB...]] [-t N] [-d DEV,...] [-c]
//
// -m sets each device's memory in MiB, as older real builds did (recent ones report the
// machine's memory and no longer have -m). -t, -d and -c are accepted and ignored. Flags of the
// double only:
//
//	--devices N              number of devices (default: as many as -m lists, at least 1)
//	--free MB[,MB...]        free memory per device in MiB (default: the -m value)
//	--protocol-version X.Y.Z version HELLO reports (default: the one package ggmlrpc speaks)
//	--concurrent             serve connections in parallel (the real server serves one at a time)
//	--crash-on-broken-pipe   die (exit status 141) when a reply hits a connection the client
//	                         has closed, as the real server dies of SIGPIPE (default true)
//
// It prints a banner like the real server's, one line per connection accepted and closed, and
// exits with status 0 on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

// exitSIGPIPE is the status a shell reports for a process killed by SIGPIPE (128+13).
const exitSIGPIPE = 141

var errCrashed = errors.New("rpc-server double: died of a broken pipe")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errCrashed):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitSIGPIPE)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type config struct {
	host, mem, free, version string
	port, devices, threads   int
	cache, concurrent, crash bool
	device                   string
}

func parse(args []string, stderr io.Writer) (rpcserver.Options, string, error) {
	var c config
	fs := flag.NewFlagSet("rpc-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, n := range []string{"H", "host"} {
		fs.StringVar(&c.host, n, "127.0.0.1", "host to bind to")
	}
	for _, n := range []string{"p", "port"} {
		fs.IntVar(&c.port, n, 50052, "port to bind to")
	}
	for _, n := range []string{"m", "mem"} {
		fs.StringVar(&c.mem, n, "", "memory size for each device in MiB, comma-separated")
	}
	for _, n := range []string{"t", "threads"} {
		fs.IntVar(&c.threads, n, 1, "number of threads (ignored by the double)")
	}
	for _, n := range []string{"d", "device"} {
		fs.StringVar(&c.device, n, "", "devices (ignored by the double)")
	}
	for _, n := range []string{"c", "cache"} {
		fs.BoolVar(&c.cache, n, false, "enable local file cache (ignored by the double)")
	}
	fs.IntVar(&c.devices, "devices", 0, "number of devices (double only)")
	fs.StringVar(&c.free, "free", "", "free memory per device in MiB, comma-separated (double only)")
	fs.StringVar(&c.version, "protocol-version", "", "protocol version HELLO reports (double only)")
	fs.BoolVar(&c.concurrent, "concurrent", false, "serve connections in parallel (double only)")
	fs.BoolVar(&c.crash, "crash-on-broken-pipe", true, "die when a reply hits a closed connection, like the real server (double only)")
	if err := fs.Parse(args); err != nil {
		return rpcserver.Options{}, "", err
	}
	if fs.NArg() > 0 {
		return rpcserver.Options{}, "", fmt.Errorf("error: unknown argument: %s", fs.Arg(0))
	}
	if c.port <= 0 || c.port > 65535 {
		return rpcserver.Options{}, "", fmt.Errorf("error: invalid port %d", c.port)
	}
	if net.ParseIP(c.host).To4() == nil {
		// The real server accepts IPv4 literals only.
		return rpcserver.Options{}, "", fmt.Errorf("error: invalid host address: %s", c.host)
	}
	total, err := mebibytes(c.mem)
	if err != nil {
		return rpcserver.Options{}, "", fmt.Errorf("error: invalid memory size: %w", err)
	}
	free, err := mebibytes(c.free)
	if err != nil {
		return rpcserver.Options{}, "", fmt.Errorf("error: invalid free memory size: %w", err)
	}
	n := max(c.devices, len(total), 1)
	opts := rpcserver.Options{
		Addr:              net.JoinHostPort(c.host, strconv.Itoa(c.port)),
		Concurrent:        c.concurrent,
		CrashOnBrokenPipe: c.crash,
	}
	for i := range n {
		d := rpcserver.DeviceMemory{Total: pick(total, i, rpcserver.DefaultMemory)}
		d.Free = pick(free, i, d.Total)
		opts.Devices = append(opts.Devices, d)
	}
	if c.version != "" {
		if opts.ProtocolVersion, err = ggmlrpc.ParseVersion(c.version); err != nil {
			return rpcserver.Options{}, "", err
		}
	}
	return opts, opts.Addr, nil
}

// mebibytes parses "A,B/C" (the real server splits on commas and slashes) into bytes.
func mebibytes(s string) ([]uint64, error) {
	if s == "" {
		return nil, nil
	}
	var out []uint64
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '/' }) {
		mb, err := strconv.ParseUint(f, 10, 64)
		if err != nil || mb > 1<<43 {
			return nil, fmt.Errorf("%s", f)
		}
		out = append(out, mb<<20)
	}
	return out, nil
}

// pick returns list[i], else the list's last value, else def.
func pick(list []uint64, i int, def uint64) uint64 {
	switch {
	case i < len(list):
		return list[i]
	case len(list) > 0:
		return list[len(list)-1]
	}
	return def
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, endpoint, err := parse(args, stderr)
	if err != nil {
		return err
	}
	opts.Logf = func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	v := opts.ProtocolVersion
	if v.IsZero() {
		v = ggmlrpc.ProtocolVersion
	}
	fmt.Fprintf(stdout, "Starting RPC server v%s\n", v)
	fmt.Fprintf(stdout, "  endpoint       : %s\n", endpoint)
	fmt.Fprintf(stdout, "  local cache    : n/a\n")
	fmt.Fprintf(stdout, "Devices:\n")
	for i, d := range opts.Devices {
		fmt.Fprintf(stdout, "  DOUBLE%d: rpc-server test double (%d MiB, %d MiB free)\n", i, d.Total>>20, d.Free>>20)
	}
	fmt.Fprintf(stdout, "  transport      : TCP\n")
	srv, err := rpcserver.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "Failed to create server socket")
		return err
	}
	select {
	case <-ctx.Done():
		return srv.Close()
	case <-srv.Crashed():
		_ = srv.Close()
		return errCrashed
	}
}
