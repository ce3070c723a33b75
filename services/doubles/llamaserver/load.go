package llamaserver

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// logger writes llama-server's log lines; writes are serialised so lines never interleave.
type logger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *logger) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

func (l *logger) banner(o Options) {
	l.printf("build: 0 (sollol-double) with %s for %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	l.printf("system info: n_threads = %d, n_threads_batch = %d, total_threads = %d\n", max(o.Threads, 1), max(o.Threads, 1), runtime.NumCPU())
}

// load reads the model, checks that each device's share fits its free memory, and takes
// LoadTime, printing the real loader's lines and one progress dot per percent.
func (s *Server) load(ctx context.Context) error {
	o := s.opts
	s.log.printf("srv    load_model: loading model '%s'\n", o.Model)
	m, err := readModelInfo(o.Model)
	if err != nil {
		s.log.printf("gguf_init_from_file_impl: failed to read magic\n")
		s.log.printf("llama_model_load: error loading model: llama_model_loader: failed to load model from %s: %v\n", o.Model, err)
		s.log.printf("llama_model_load_from_file_impl: failed to load model\n")
		return s.loadFailed()
	}
	s.model = m
	s.log.printf("llama_model_loader: loaded meta data with %d key-value pairs and %d tensors from %s (version GGUF V%d (latest))\n",
		m.kvCount, m.tensorCount, o.Model, m.version)
	s.log.printf("print_info: file format = GGUF V%d (latest)\n", m.version)
	s.log.printf("print_info: file size   = %.2f MiB\n", float64(m.fileSize)/(1<<20))
	s.log.printf("print_info: arch        = %s\n", m.architecture)
	s.log.printf("print_info: n_ctx_train = %d\n", m.contextLen)
	s.log.printf("print_info: n_layer     = %d\n", m.blockCount)

	s.nCtx = o.CtxSize
	if s.nCtx <= 0 {
		s.nCtx = int(m.contextLen)
	}
	if s.nCtx <= 0 {
		s.nCtx = 4096
	}
	s.nSlot = max(s.nCtx/o.Parallel, 1)
	s.slots = make(chan struct{}, o.Parallel)

	s.log.printf("load_tensors: loading model tensors, this can take a while... (mmap = true)\n")
	layers := int(m.blockCount)
	if len(s.backend.devices) > 0 {
		s.log.printf("load_tensors: offloading output layer to GPU\n")
		s.log.printf("load_tensors: offloading %d repeating layers to GPU\n", layers)
		s.log.printf("load_tensors: offloaded %d/%d layers to GPU\n", layers+1, layers+1)
	}
	shares := s.splitShares()
	for i, d := range s.backend.devices {
		need := uint64(float64(m.fileSize) * shares[i])
		if need > d.free {
			s.log.printf("ggml_backend_rpc_buffer_type_alloc_buffer: failed to allocate %s buffer of size %d\n", d.name, need)
			s.log.printf("alloc_tensor_range: failed to allocate %s buffer of size %d\n", d.name, need)
			s.log.printf("llama_model_load: error loading model: unable to allocate %s buffer\n", d.name)
			s.log.printf("llama_model_load_from_file_impl: failed to load model\n")
			return s.loadFailed()
		}
		s.log.printf("load_tensors: %12s model buffer size = %8.2f MiB\n", d.name, float64(need)/(1<<20))
	}
	s.log.printf("load_tensors: %12s model buffer size = %8.2f MiB\n", "CPU_Mapped", float64(m.fileSize)/(1<<20)/8)

	if err := s.progressDots(ctx); err != nil {
		return err
	}
	s.log.printf("llama_context: constructing llama_context\n")
	s.log.printf("llama_context: n_seq_max     = %d\n", o.Parallel)
	s.log.printf("llama_context: n_ctx         = %d\n", s.nCtx)
	s.log.printf("llama_context: n_ctx_per_seq = %d\n", s.nSlot)
	for _, d := range s.backend.devices {
		s.log.printf("llama_kv_cache: %10s KV buffer size = %8.2f MiB\n", d.name, float64(s.nCtx)*float64(m.blockCount)*512/(1<<20))
	}
	s.log.printf("common_init_from_params: warming up the model with an empty run - please wait ... (--no-warmup to disable)\n")
	s.log.printf("srv          init: initializing slots, n_slots = %d\n", o.Parallel)
	for i := range o.Parallel {
		s.log.printf("slot         init: id  %d | task -1 | new slot, n_ctx = %d\n", i, s.nSlot)
	}
	return nil
}

func (s *Server) loadFailed() error {
	s.log.printf("srv    load_model: failed to load model, '%s'\n", s.opts.Model)
	s.log.printf("srv    operator(): operator(): cleaning up before exit...\n")
	return &ExitError{Code: ExitFailure, Reason: "main: exiting due to model loading error"}
}

// progressDots spreads LoadTime over the 100 dots llama.cpp's default progress callback
// prints, one per percent, with the newline only at 100%.
func (s *Server) progressDots(ctx context.Context) error {
	const dots = 100
	step := s.opts.LoadTime / dots
	start := time.Now()
	for i := 1; i <= dots; i++ {
		if wait := time.Until(start.Add(step * time.Duration(i))); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		if i == dots {
			s.log.printf(".\n")
		} else {
			s.log.printf(".")
		}
	}
	return nil
}

// splitShares is the share of the weights per device: --tensor-split normalised, else in
// proportion to free memory, as llama-server splits by default.
func (s *Server) splitShares() []float64 {
	devs := s.backend.devices
	out := make([]float64, len(devs))
	var sum float64
	for i := range devs {
		if len(s.opts.TensorSplit) > 0 {
			if i < len(s.opts.TensorSplit) {
				out[i] = s.opts.TensorSplit[i]
			}
		} else {
			out[i] = float64(devs[i].free)
		}
		sum += out[i]
	}
	for i := range out {
		if sum > 0 {
			out[i] /= sum
		} else {
			out[i] = 1 / float64(len(out))
		}
	}
	return out
}

// modelName is the name the API reports: --alias, else the file name.
func (s *Server) modelName() string {
	if s.opts.Alias != "" {
		return s.opts.Alias
	}
	return strings.TrimSuffix(filepath.Base(s.opts.Model), ".gguf")
}
