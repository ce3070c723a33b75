package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/httpjson"
)

// maxOllamaBody bounds what a probe reads from one Ollama answer; a node with hundreds of
// models stays far below it, and a misbehaving peer cannot make discovery allocate without
// limit.
const maxOllamaBody = 8 << 20

type ollamaVersion struct {
	Version string `json:"version"`
}

type ollamaDetails struct {
	Family            string `json:"family"`
	ParameterSize     string `json:"parameter_size"`
	QuantizationLevel string `json:"quantization_level"`
}

type ollamaTags struct {
	Models []struct {
		Name       string        `json:"name"`
		Size       uint64        `json:"size"`
		Digest     string        `json:"digest"`
		ModifiedAt time.Time     `json:"modified_at"`
		Details    ollamaDetails `json:"details"`
	} `json:"models"`
}

type ollamaPS struct {
	Models []struct {
		Name          string    `json:"name"`
		Size          uint64    `json:"size"`
		SizeVRAM      uint64    `json:"size_vram"`
		ContextLength uint32    `json:"context_length"`
		ExpiresAt     time.Time `json:"expires_at"`
	} `json:"models"`
}

// probeOllama verifies an Ollama server: /api/version must answer with a version (an open
// port that serves something else fails here), then /api/tags and /api/ps give its
// installed and loaded models. The round trip of /api/version is the latency sample.
func (p *Prober) probeOllama(ctx context.Context, addr string) Result {
	base := "http://" + addr
	var version ollamaVersion
	start := time.Now()
	if err := p.getJSON(ctx, base+"/api/version", &version); err != nil {
		return failed(fmt.Errorf("not an Ollama server at %s: %w", addr, err))
	}
	rtt := time.Since(start)
	if version.Version == "" {
		return failed(fmt.Errorf("not an Ollama server at %s: /api/version has no version", addr))
	}
	var tags ollamaTags
	if err := p.getJSON(ctx, base+"/api/tags", &tags); err != nil {
		return failed(fmt.Errorf("ollama %s: list models: %w", addr, err))
	}
	var ps ollamaPS
	if err := p.getJSON(ctx, base+"/api/ps", &ps); err != nil {
		return failed(fmt.Errorf("ollama %s: list loaded models: %w", addr, err))
	}

	b := &commonv1.Backend{Version: version.Version, Capacity: &commonv1.Capacity{}}
	for _, m := range tags.Models {
		b.InstalledModels = append(b.InstalledModels, &commonv1.InstalledModel{
			Name:          m.Name,
			SizeBytes:     m.Size,
			Family:        m.Details.Family,
			ParameterSize: m.Details.ParameterSize,
			Quantization:  m.Details.QuantizationLevel,
			Digest:        m.Digest,
			ModifiedAt:    timestamp(m.ModifiedAt),
		})
	}
	p.describe(ctx, base, b.InstalledModels)
	for _, m := range ps.Models {
		b.LoadedModels = append(b.LoadedModels, &commonv1.LoadedModel{
			Name:          m.Name,
			SizeBytes:     m.Size,
			VramBytes:     m.SizeVRAM,
			ContextLength: m.ContextLength,
			ExpiresAt:     timestamp(m.ExpiresAt),
		})
	}
	return Result{Backend: b, RTT: rtt, Outcome: outcomeSuccess}
}

func (p *Prober) getJSON(ctx context.Context, url string, into any) error {
	return p.callJSON(ctx, http.MethodGet, url, nil, into)
}

// callJSON sends body (as JSON, when not nil) and decodes the answer, bounded in size.
func (p *Prober) callJSON(ctx context.Context, method, url string, body, into any) error {
	req, err := httpjson.NewRequest(ctx, method, url, body)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxOllamaBody+1))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered HTTP %d", url, resp.StatusCode)
	}
	if len(answer) > maxOllamaBody {
		return errors.New(url + " answered more than 8 MiB")
	}
	if err := json.Unmarshal(answer, into); err != nil {
		return fmt.Errorf("%s: not JSON: %w", url, err)
	}
	return nil
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// describe adds what /api/show says to each model: from the cache by digest, else asked for
// (a few per probe). A model that cannot be described keeps its listing only; the probe does
// not fail for it.
func (p *Prober) describe(ctx context.Context, base string, models []*commonv1.InstalledModel) {
	asked := 0
	for _, m := range models {
		f, ok := p.shows.get(m.GetDigest())
		if !ok || m.GetDigest() == "" {
			if asked >= showsPerProbe || p.shows.recentlyFailed(m.GetDigest(), time.Now()) {
				continue
			}
			asked++
			var err error
			if f, err = p.show(ctx, base, m.GetName()); err != nil {
				p.shows.fail(m.GetDigest(), time.Now())
				continue
			}
			if m.GetDigest() != "" {
				p.shows.put(m.GetDigest(), f)
			}
		}
		m.Capabilities, m.ContextLength, m.KvBytesPerToken = f.capabilities, f.contextLength, f.kvBytesPerToken
	}
}
