// Package ggmlrpc speaks the wire protocol of llama.cpp's RPC server (rpc-server, newer builds
// ggml-rpc-server) far enough to probe one: it checks that an address really is an rpc-server,
// reads its protocol version, and asks each of its devices for free and total memory, alignment
// and maximum buffer size — without allocating or loading anything.
//
// It also holds the one definition of the framing, command ids and message layouts that the
// project's rpc-server test double (services/doubles/rpcserver) uses, so both sides agree.
//
// # Source
//
// Written from a reading of ggml/src/ggml-rpc/ggml-rpc.cpp and transport.cpp and
// ggml/include/ggml-rpc.h as of llama.cpp commit d3cf1f14a2e16fbd7ebad34b12cb71b8af345c43
// (August 2026), read through its sync into ggml-org/ggml commit
// d99724f2b141fed9e1a9f402213506c081433465 (whose scripts/sync-llama.last names it). That code
// speaks RPC protocol version 5.1.0, which is [ProtocolVersion]. No llama.cpp code is copied
// here; this is an independent implementation.
//
// # Wire format (version 5.x; all integers little-endian, all structs packed)
//
//	request : | command (1 byte) | payload size (uint64) | payload |
//	response: | payload size (uint64) | payload |
//
// Some commands have no response at all (SET_TENSOR, GRAPH_COMPUTE, GRAPH_RECOMPUTE); some
// answer with an empty payload (FREE_BUFFER, BUFFER_CLEAR, MEMSET_TENSOR, INIT_TENSOR). See
// [LayoutOf]. The server checks the payload size of every fixed-size request and closes the
// connection on a mismatch, as it does on an unknown command, a device index out of range, an
// unknown buffer, or any other request it cannot serve: it never sends an error reply.
//
// HELLO (command 14) must be the first command of a connection, and only the first. Since
// protocol 4.0.0 its request carries 24 bytes of transport capabilities (all zero for plain
// TCP) and its response is | major | minor | patch | padding | capabilities (24) | = 28 bytes.
// Versions 1–3 sent an empty request and got a 3-byte response; a 4.x/5.x server closes the
// connection on an empty HELLO and a 1–3.x server closes it on a 24-byte one. llama-server
// accepts a server whose major version equals its own and whose minor version is not newer
// ([Version.Accepts]); otherwise it aborts with "RPC server version mismatch".
//
// DEVICE_COUNT (15): empty request, response uint32. GET_DEVICE_MEMORY (11): request uint32
// device, response | free uint64 | total uint64 |. GET_ALIGNMENT (1) and GET_MAX_SIZE (2):
// request uint32 device, response uint64.
//
// # Behaviour of the real server that matters to a prober
//
//   - It serves one connection at a time, in its accept loop, with a listen backlog of 1 and no
//     read timeouts. While llama-server (or a stuck client) holds a connection, a probe's TCP
//     connect still succeeds but its HELLO gets no answer until that client leaves: a busy
//     rpc-server looks exactly like a silent peer. Probe reports that case with [ErrNoReply]
//     (besides [ErrNotRPCServer]) so the caller can keep the last known state instead of
//     dropping the server. A probe holds the server's only slot while it runs, so Probe closes
//     the connection as soon as it has its answers.
//   - It does not guard against SIGPIPE. A client that sends a request and then closes its
//     connection normally before the reply (a probe that gave up on a busy server, whose
//     connection then waited in the backlog) makes the server's reply hit a closed socket, and
//     the whole rpc-server dies of SIGPIPE when it finally serves that connection. Probe and
//     Dial therefore give up with Conn.Abort (a TCP reset), which the server survives.
//   - It binds IPv4 literals only (no host names) and prints its startup banner with buffered
//     stdio: when stdout is a pipe the banner appears only after the first client connected.
//     Wait for readiness by probing, not by reading its output.
//   - Recent builds report the machine's real free memory; the -m/--mem flag of older builds is
//     gone (an unknown flag makes it print usage and exit with status 0).
package ggmlrpc
