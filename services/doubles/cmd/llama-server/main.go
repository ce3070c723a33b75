// Command llama-server runs the llama-server test double (package llamaserver) with the command
// line of llama.cpp's llama-server, so a test or a manager can start either binary with the
// same arguments:
//
//	llama-server -m MODEL.gguf --rpc h1:p1,h2:p2 -ngl 99 -c CTX -np N -t 1 --host H --port P [-ts A,B]
//
// Also accepted (and ignored, like flags that do not change what the double does): -a/--alias
// (used as the model name), -b, -ub, -fa, --no-webui, --no-warmup, --metrics, --jinja,
// -cb/--cont-batching, --log-prefix, --log-timestamps. An unknown flag is an error, as with
// the real binary. Flags of the double only:
//
//	--double-load-time D       how long loading the model takes (default 0)
//	--double-token-interval D  pause before each generated token (default 0)
//	--double-crash-after D     abort this long after becoming ready (default never)
//
// It writes its log to stderr, exits 0 on SIGINT or SIGTERM, 1 when it cannot start (bad model,
// port taken), and 134 where the real server aborts (an rpc backend unreachable at start or
// lost while running, a crash on demand).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sollol/mesh/services/doubles/llamaserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	opts, err := parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	opts.Log = stderr
	err = llamaserver.Run(ctx, opts)
	var exit *llamaserver.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		// The double has already logged why, in the real server's words.
		return exit.Code
	default:
		fmt.Fprintln(stderr, err)
		return 1
	}
}

func parse(args []string) (llamaserver.Options, error) {
	var o llamaserver.Options
	var rpc, split string
	fs := flag.NewFlagSet("llama-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, def string, names ...string) {
		for _, n := range names {
			fs.StringVar(p, n, def, "")
		}
	}
	num := func(p *int, def int, names ...string) {
		for _, n := range names {
			fs.IntVar(p, n, def, "")
		}
	}
	str(&o.Model, "", "m", "model")
	str(&rpc, "", "rpc")
	str(&split, "", "ts", "tensor-split")
	str(&o.Host, "127.0.0.1", "host")
	str(&o.Alias, "", "a", "alias")
	num(&o.Port, 8080, "port")
	num(&o.GPULayers, -1, "ngl", "gpu-layers", "n-gpu-layers")
	num(&o.CtxSize, 4096, "c", "ctx-size")
	num(&o.Parallel, -1, "np", "parallel")
	num(&o.Threads, -1, "t", "threads")
	var ignoredInt int
	var ignoredStr string
	var ignoredBool bool
	num(&ignoredInt, 0, "b", "batch-size", "ub", "ubatch-size")
	str(&ignoredStr, "", "fa", "flash-attn")
	for _, n := range []string{"no-webui", "no-warmup", "metrics", "jinja", "cb", "cont-batching", "log-prefix", "log-timestamps"} {
		fs.BoolVar(&ignoredBool, n, false, "")
	}
	fs.DurationVar(&o.LoadTime, "double-load-time", 0, "")
	fs.DurationVar(&o.TokenInterval, "double-token-interval", 0, "")
	fs.DurationVar(&o.CrashAfter, "double-crash-after", 0, "")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("invalid argument: %v", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("invalid argument: %s", fs.Arg(0))
	}
	for _, ep := range strings.Split(rpc, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			o.RPC = append(o.RPC, ep)
		}
	}
	if split != "" {
		for _, f := range strings.FieldsFunc(split, func(r rune) bool { return r == ',' || r == '/' }) {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil || v < 0 {
				return o, fmt.Errorf("invalid value for --tensor-split: %s", split)
			}
			o.TensorSplit = append(o.TensorSplit, v)
		}
	}
	if o.Port <= 0 || o.Port > 65535 {
		return o, fmt.Errorf("invalid port %d", o.Port)
	}
	if o.LoadTime < 0 || o.TokenInterval < 0 || o.CrashAfter < 0 || o.LoadTime > 24*time.Hour {
		return o, fmt.Errorf("invalid double timing")
	}
	return o, nil
}
