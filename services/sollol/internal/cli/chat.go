package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
)

func chatCommand() Command {
	const usage = `chat -m MODEL [--hint auto|pool|shard] [--max-tokens N] "prompt"`
	return Command{Name: "chat", Usage: usage, Run: func(ctx context.Context, env *Env, args []string) error {
		// A chat streams as long as it needs (Ctrl-C ends it), so --timeout is not used.
		fs, addr, _, _ := newFlags(env, "chat", usage, "127.0.0.1:50051", "SOLLOL_ROUTER_ADDR")
		model := fs.String("m", "", "model name (required)")
		hint := fs.String("hint", "auto", "path: auto, pool or shard")
		maxTokens := fs.Int("max-tokens", 0, "stop after this many tokens (0: the model's default)")
		system := fs.String("system", "", "system prompt")
		if err := parse(fs, args); err != nil {
			return err
		}
		if *model == "" {
			return usageError{fmt.Errorf("-m MODEL is required")}
		}
		prompt := strings.Join(fs.Args(), " ")
		if prompt == "" {
			return usageError{fmt.Errorf("a prompt is required")}
		}
		h, err := parseHint(*hint)
		if err != nil {
			return err
		}
		req := &routerv1.ChatRequest{Model: *model, Hint: h}
		if *system != "" {
			req.Messages = append(req.Messages, &commonv1.ChatMessage{Role: commonv1.Role_ROLE_SYSTEM, Content: *system})
		}
		req.Messages = append(req.Messages, &commonv1.ChatMessage{Role: commonv1.Role_ROLE_USER, Content: prompt})
		if *maxTokens > 0 {
			req.Options = &commonv1.GenerationOptions{MaxTokens: proto.Int32(int32(*maxTokens))}
		}
		conn, err := dial(*addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		stream, err := routerv1.NewRouterServiceClient(conn).Chat(ctx, req)
		if err != nil {
			return err
		}
		return render(env, stream)
	}}
}

// render prints tokens as they arrive, a progress bar on stderr while a coordinator starts,
// and the route taken at the end.
func render(env *Env, stream interface {
	Recv() (*routerv1.ChatResponse, error)
}) error {
	showedProgress := false
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return fmt.Errorf("the stream ended without its terminal event")
		}
		if err != nil {
			if showedProgress {
				fmt.Fprintln(env.Stderr)
			}
			return err
		}
		switch {
		case msg.GetProgress() != nil:
			showedProgress = true
			fmt.Fprintf(env.Stderr, "\r%s", progressBar(msg.GetProgress()))
		case msg.GetChunk() != nil:
			if showedProgress {
				fmt.Fprintln(env.Stderr)
				showedProgress = false
			}
			fmt.Fprint(env.Stdout, msg.GetChunk().GetContent())
		case msg.GetDone() != nil:
			fmt.Fprintln(env.Stdout)
			fmt.Fprintln(env.Stderr, describeDone(msg.GetDone()))
			return nil
		}
	}
}

func progressBar(p *commonv1.LoadProgress) string {
	const width = 30
	stage := strings.ToLower(strings.TrimPrefix(p.GetStage().String(), "LOAD_STAGE_"))
	if p.Fraction == nil {
		return fmt.Sprintf("%-8s %s", stage, p.GetMessage())
	}
	filled := int(p.GetFraction() * width)
	filled = min(max(filled, 0), width)
	return fmt.Sprintf("%-8s [%s%s] %3.0f%% %s", stage, strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.GetFraction()*100, p.GetMessage())
}

func describeDone(d *commonv1.Done) string {
	r := d.GetRoute()
	path := strings.ToLower(strings.TrimPrefix(r.GetPath().String(), "ROUTE_PATH_"))
	s := fmt.Sprintf("[%s via %s, %d attempt(s), %d tokens, first token after %s",
		path, r.GetBackend(), r.GetAttempts(), d.GetUsage().GetCompletionTokens(),
		d.GetTimings().GetTimeToFirstToken().AsDuration().Round(time.Millisecond))
	if r.GetFallbackReason() != "" {
		s += "; fell back: " + r.GetFallbackReason()
	}
	return s + "]"
}
