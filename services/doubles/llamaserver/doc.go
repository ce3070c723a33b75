// Package llamaserver is an in-process test double of llama.cpp's llama-server running a model
// over rpc-server backends (llama-server --model M --rpc h1:p1,h2:p2 -ngl 99 -c CTX -np N). It
// speaks the parts of llama-server's protocol that the coordinator-manager uses, and prints the
// log lines a manager parses, in llama-server's own words.
//
// # What is faithful
//
//   - Start order: the --rpc backends are connected first (TCP connect, ggml-rpc HELLO, device
//     count and memory of every device), then the HTTP server starts, then the model loads.
//     An unreachable backend aborts the process before HTTP starts, with the line
//     "…/ggml-rpc.cpp:NNN: Failed to connect to HOST:PORT" and exit status 134 (the real one
//     dies of SIGABRT, which a shell reports as 134). A backend that is busy with another
//     client (rpc-servers serve one at a time) is waited for without a timeout, as the real
//     client does. The connections are held for the life of the process, so the backends
//     stay busy for everybody else.
//   - GET /health answers 503 {"error":{"code":503,"message":"Loading model","type":
//     "unavailable_error"}} while the model loads and 200 {"status":"ok"} after; every other
//     endpoint answers the same 503 while loading.
//   - POST /v1/chat/completions (and /chat/completions) and POST /completion (and
//     /completions), streaming (SSE: "data: {…}\n\n") and not: OpenAI chunk objects with a
//     role chunk, one chunk per token, a finish chunk (finish_reason "length" or "stop"), a
//     usage chunk when stream_options.include_usage is set, timings on the last chunk, then
//     "data: [DONE]" (OpenAI endpoints only, as the real server). /completion streams
//     {"content":…,"stop":false} objects and a final {"stop":true,…,"timings":…}.
//   - max_tokens / n_predict are honoured exactly; without them generation runs until the
//     slot's context (n_ctx / n_parallel) is full. A prompt that does not fit the slot's
//     context is refused with HTTP 400 exceed_context_size_error. Requests beyond --parallel
//     slots wait for a free slot.
//   - The load log: "llama_model_loader: loaded meta data …", "load_tensors: …" lines with
//     the per-device buffer sizes, one "." per percent of the load (no newline until 100%),
//     "llama_context: …", "main: model loaded" and "main: server is listening on
//     http://HOST:PORT - starting the main loop". A model whose share of the weights does not
//     fit a backend's free memory fails to load like the real one ("unable to allocate
//     RPC0[…] buffer", exit status 1); a missing or non-GGUF model file too.
//   - A backend that dies under a running server aborts it with "Remote RPC server crashed
//     or returned malformed response" and exit status 134.
//
// # Deliberate differences
//
//   - Text: tokens are printable-ASCII pieces chosen deterministically from the prompt and
//     the seed; nothing is computed on the backends (no tensor is allocated or set).
//   - The real server notices a dead backend only when it next talks to it (during a
//     request); the double watches the idle connections and aborts at once.
//   - Prompt tokens are counted as one per byte of the rendered prompt plus one.
//   - Test-only controls: Options.LoadTime (how long the load takes), TokenInterval,
//     CrashAfter, and the prompt marker CrashMarker, which makes the server abort after two
//     tokens of that request.
package llamaserver
