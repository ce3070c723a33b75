package tinymodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// ggufFile is what the minimal reader below understands of a GGUF file.
type ggufFile struct {
	version    uint32
	kv         map[string]any
	keys       []string
	tensors    []ggufTensor
	dataOffset int64
	size       int64
}

type ggufTensor struct {
	name   string
	dims   []uint64
	typ    uint32
	offset uint64
}

type reader struct {
	b   []byte
	off int
}

func (r *reader) need(n int) []byte {
	if r.off+n > len(r.b) {
		panic(fmt.Sprintf("read past end at %d (+%d of %d)", r.off, n, len(r.b)))
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}
func (r *reader) u8() uint8   { return r.need(1)[0] }
func (r *reader) u32() uint32 { return binary.LittleEndian.Uint32(r.need(4)) }
func (r *reader) u64() uint64 { return binary.LittleEndian.Uint64(r.need(8)) }
func (r *reader) str() string { return string(r.need(int(r.u64()))) }

func (r *reader) value(typ uint32) any {
	switch typ {
	case 0:
		return r.u8()
	case 1:
		return int8(r.u8())
	case 2:
		return binary.LittleEndian.Uint16(r.need(2))
	case 3:
		return int16(binary.LittleEndian.Uint16(r.need(2)))
	case typeUint32:
		return r.u32()
	case typeInt32:
		return int32(r.u32())
	case typeFloat32:
		return math.Float32frombits(r.u32())
	case typeBool:
		return r.u8() != 0
	case typeString:
		return r.str()
	case typeArray:
		et := r.u32()
		n := r.u64()
		vals := make([]any, n)
		for i := range vals {
			vals[i] = r.value(et)
		}
		return vals
	case 10:
		return r.u64()
	case 11:
		return int64(r.u64())
	case 12:
		return math.Float64frombits(r.u64())
	}
	panic(fmt.Sprintf("unknown value type %d at %d", typ, r.off))
}

func parseGGUF(t *testing.T, b []byte) (f *ggufFile) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("parse: %v", p)
		}
	}()
	r := &reader{b: b}
	require.Equal(t, Magic, string(r.need(4)), "magic")
	f = &ggufFile{kv: map[string]any{}, size: int64(len(b))}
	f.version = r.u32()
	nt, nkv := r.u64(), r.u64()
	for i := uint64(0); i < nkv; i++ {
		k := r.str()
		_, dup := f.kv[k]
		require.False(t, dup, "duplicate key %s", k)
		f.kv[k] = r.value(r.u32())
		f.keys = append(f.keys, k)
	}
	for i := uint64(0); i < nt; i++ {
		ti := ggufTensor{name: r.str()}
		nd := r.u32()
		for j := uint32(0); j < nd; j++ {
			ti.dims = append(ti.dims, r.u64())
		}
		ti.typ = r.u32()
		ti.offset = r.u64()
		f.tensors = append(f.tensors, ti)
	}
	align := int64(32)
	if a, ok := f.kv["general.alignment"].(uint32); ok {
		align = int64(a)
	}
	f.dataOffset = (int64(r.off) + align - 1) / align * align
	return f
}

func (f *ggufFile) tensor(name string) *ggufTensor {
	for i := range f.tensors {
		if f.tensors[i].name == name {
			return &f.tensors[i]
		}
	}
	return nil
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, f16 := range []bool{false, true} {
		t.Run(fmt.Sprintf("f16=%v", f16), func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, Write(&buf, Options{Seed: 7, F16: f16, Name: "unit"}))
			f := parseGGUF(t, buf.Bytes())

			require.Equal(t, uint32(3), f.version)
			require.Len(t, f.tensors, 3+9*BlockCount)
			require.Equal(t, "llama", f.kv["general.architecture"])
			require.Equal(t, "unit", f.kv["general.name"])
			require.Equal(t, uint32(BlockCount), f.kv["llama.block_count"])
			require.Equal(t, uint32(EmbeddingLen), f.kv["llama.embedding_length"])
			require.Equal(t, uint32(FeedForwardLen), f.kv["llama.feed_forward_length"])
			require.Equal(t, uint32(ContextLen), f.kv["llama.context_length"])
			require.Equal(t, uint32(HeadCount), f.kv["llama.attention.head_count"])
			require.Equal(t, uint32(HeadCountKV), f.kv["llama.attention.head_count_kv"])
			require.Equal(t, uint32(HeadDim), f.kv["llama.rope.dimension_count"])
			require.Equal(t, float32(RMSEpsilon), f.kv["llama.attention.layer_norm_rms_epsilon"])
			require.Equal(t, uint32(32), f.kv["general.alignment"])
			wantFT := uint32(0)
			if f16 {
				wantFT = 1
			}
			require.Equal(t, wantFT, f.kv["general.file_type"])

			// Tokenizer: parallel arrays, special ids, types.
			require.Equal(t, "llama", f.kv["tokenizer.ggml.model"])
			toks := f.kv["tokenizer.ggml.tokens"].([]any)
			scores := f.kv["tokenizer.ggml.scores"].([]any)
			types := f.kv["tokenizer.ggml.token_type"].([]any)
			require.Len(t, scores, len(toks))
			require.Len(t, types, len(toks))
			require.Equal(t, uint32(len(toks)), f.kv["llama.vocab_size"])
			require.Equal(t, "<unk>", toks[f.kv["tokenizer.ggml.unknown_token_id"].(uint32)])
			require.Equal(t, "<s>", toks[f.kv["tokenizer.ggml.bos_token_id"].(uint32)])
			require.Equal(t, "</s>", toks[f.kv["tokenizer.ggml.eos_token_id"].(uint32)])
			require.Equal(t, int32(TokenUnknown), types[UnkID])
			require.Equal(t, int32(TokenControl), types[BOSID])
			require.Equal(t, int32(TokenControl), types[EOSID])
			seen := map[string]bool{}
			for i, tok := range toks {
				s := tok.(string)
				require.False(t, seen[s], "duplicate token %q", s)
				seen[s] = true
				if i >= ByteTokenBase && i < ByteTokenBase+256 {
					require.Equal(t, fmt.Sprintf("<0x%02X>", i-ByteTokenBase), s)
					require.Equal(t, int32(TokenByte), types[i])
				}
			}
			for c := byte('!'); c <= '~'; c++ {
				require.True(t, seen[string(c)], "printable %q missing", c)
			}
			require.True(t, seen["▁"])
			require.True(t, seen["▁hello"])

			// Tensors: ggml dims order (ne[0] contiguous), types, aligned offsets
			// that tile the data section, and the file ends with the data.
			E, F, V := uint64(EmbeddingLen), uint64(FeedForwardLen), uint64(len(toks))
			want := map[string][]uint64{
				"token_embd.weight":  {E, V},
				"output_norm.weight": {E},
				"output.weight":      {E, V},
			}
			for b := 0; b < BlockCount; b++ {
				p := fmt.Sprintf("blk.%d.", b)
				want[p+"attn_norm.weight"] = []uint64{E}
				want[p+"ffn_norm.weight"] = []uint64{E}
				want[p+"attn_q.weight"] = []uint64{E, E}
				want[p+"attn_k.weight"] = []uint64{E, E}
				want[p+"attn_v.weight"] = []uint64{E, E}
				want[p+"attn_output.weight"] = []uint64{E, E}
				want[p+"ffn_gate.weight"] = []uint64{E, F}
				want[p+"ffn_up.weight"] = []uint64{E, F}
				want[p+"ffn_down.weight"] = []uint64{F, E}
			}
			require.Len(t, f.tensors, len(want))
			var next uint64
			for _, ti := range f.tensors {
				require.Equal(t, want[ti.name], ti.dims, ti.name)
				n := uint64(1)
				for _, d := range ti.dims {
					n *= d
				}
				elem := uint64(4)
				switch {
				case len(ti.dims) == 1:
					require.Equal(t, uint32(ggmlF32), ti.typ, "%s: norms stay f32", ti.name)
				case f16:
					require.Equal(t, uint32(ggmlF16), ti.typ, ti.name)
					elem = 2
				default:
					require.Equal(t, uint32(ggmlF32), ti.typ, ti.name)
				}
				require.Equal(t, next, ti.offset, ti.name)
				require.Zero(t, ti.offset%32, ti.name)
				next = alignUp(ti.offset + n*elem)
			}
			require.Equal(t, f.dataOffset+int64(next), f.size)

			// The reserved dimension: output.weight values read from the file.
			out := f.tensor("output.weight")
			read := func(i uint64) float32 {
				at := f.dataOffset + int64(out.offset)
				if f16 {
					return f16ToF32(binary.LittleEndian.Uint16(buf.Bytes()[at+int64(i)*2:]))
				}
				return math.Float32frombits(binary.LittleEndian.Uint32(buf.Bytes()[at+int64(i)*4:]))
			}
			require.Equal(t, -defaultParams.DisallowBias, read(EOSID*E))
			require.Equal(t, -defaultParams.DisallowBias, read((ByteTokenBase+0x80)*E+1))
			last := uint64(len(toks) - 1)
			require.Equal(t, -defaultParams.ClassWeight, read(last*E+uint64(tokenClass[last])))
		})
	}
}

func TestDeterministic(t *testing.T) {
	a := Bytes(Options{Seed: 42})
	b := Bytes(Options{Seed: 42})
	require.True(t, bytes.Equal(a, b), "same options must give identical bytes")
	c := Bytes(Options{Seed: 43})
	require.Equal(t, len(a), len(c))
	require.False(t, bytes.Equal(a, c), "different seeds must give different weights")

	// Pin the bytes of the default model, so that an accidental change of the
	// generator (which would change every test's text) is noticed.
	// If you change the generator on purpose, update the digest.
	sum := sha256.Sum256(Bytes(Options{}))
	require.Equal(t, defaultModelSHA256, hex.EncodeToString(sum[:]))

	// WriteFile writes the same bytes.
	p := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, WriteFile(p, Options{Seed: 42}))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(a, got))
	entries, err := os.ReadDir(filepath.Dir(p))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")
}

const defaultModelSHA256 = "cd39a7ebcb4f4db98586ca99c343dd5453f9f722d347cc14875ae014f5547787"

func TestSize(t *testing.T) {
	f32 := len(Bytes(Options{}))
	f16 := len(Bytes(Options{F16: true}))
	t.Logf("f32: %d bytes, f16: %d bytes", f32, f16)
	require.Less(t, f32, 1<<20)
	require.Greater(t, f32, 100<<10)
	require.Less(t, f16, f32*6/10)
}

func TestVocabulary(t *testing.T) {
	v := Vocabulary()
	for id, tok := range v {
		if !Emittable(id) {
			continue
		}
		// What a SentencePiece decoder makes of the piece.
		text := strings.ReplaceAll(tok.Piece, "▁", " ")
		require.NotEmpty(t, text)
		for _, c := range []byte(text) {
			require.True(t, c >= 0x20 && c <= 0x7e, "token %d %q is not printable ASCII", id, tok.Piece)
		}
	}
	require.False(t, Emittable(UnkID))
	require.False(t, Emittable(BOSID))
	require.False(t, Emittable(EOSID))
	for b := 0; b < 256; b++ {
		require.False(t, Emittable(ByteTokenBase+b))
	}
	// Tokens whose text is the same up to spaces share a class, so the
	// alternation of classes never emits the same text twice in a row; both
	// classes have plenty of tokens.
	classOf := map[string]int{}
	perClass := map[int]int{}
	for id, tok := range v {
		if !Emittable(id) {
			continue
		}
		key := strings.TrimSpace(strings.ReplaceAll(tok.Piece, "▁", " "))
		if c, ok := classOf[key]; ok {
			require.Equal(t, c, tokenClass[id], "%q", tok.Piece)
		}
		classOf[key] = tokenClass[id]
		perClass[tokenClass[id]]++
	}
	require.Greater(t, perClass[classADim], 64)
	require.Greater(t, perClass[classBDim], 64)
	// Every multi-character piece can be reached by SentencePiece merges:
	// its prefix one character shorter is in the vocabulary too.
	have := map[string]bool{}
	for _, tok := range v {
		have[tok.Piece] = true
	}
	for _, tok := range v {
		if r := []rune(tok.Piece); tok.Type == TokenNormal && len(r) > 1 {
			require.True(t, have[string(r[:len(r)-1])], tok.Piece)
		}
	}
}

func TestF16Conversion(t *testing.T) {
	// Every finite f16 value survives a round trip.
	for h := 0; h < 1<<16; h++ {
		if h&0x7c00 == 0x7c00 {
			continue // inf/NaN
		}
		require.Equal(t, uint16(h), f32ToF16(f16ToF32(uint16(h))), "%#04x", h)
	}
	// Round to nearest, ties to even.
	require.Equal(t, uint16(0x3c00), f32ToF16(1+1.0/2048))          // tie -> even (down)
	require.Equal(t, uint16(0x3c02), f32ToF16(1+3.0/2048))          // tie -> even (up)
	require.Equal(t, uint16(0x3c01), f32ToF16(1+1.0/2048+1.0/8192)) // above tie
	require.Equal(t, uint16(0x7bff), f32ToF16(65504))
	require.Equal(t, uint16(0x0001), f32ToF16(float32(math.Ldexp(1, -24))))
	require.Equal(t, uint16(0x8000), f32ToF16(float32(-math.Ldexp(1, -30))))
}

// spectralUpper returns an upper bound of the spectral norm of the row-major
// matrix w (rows of length in): for G = WᵀW, ||W||² = ρ(G) ≤ ||G^m||∞^(1/m),
// with m = 2^k by repeated squaring (rescaled to stay finite).
func spectralUpper(w []float32, in int) float64 {
	rows := len(w) / in
	g := make([]float64, in*in)
	for i := 0; i < in; i++ {
		for j := 0; j < in; j++ {
			var s float64
			for r := 0; r < rows; r++ {
				s += float64(w[r*in+i]) * float64(w[r*in+j])
			}
			g[i*in+j] = s
		}
	}
	infNorm := func(g []float64) float64 {
		m := 0.0
		for i := 0; i < in; i++ {
			var s float64
			for j := 0; j < in; j++ {
				s += math.Abs(g[i*in+j])
			}
			m = math.Max(m, s)
		}
		return m
	}
	logScale, power := 0.0, 1.0 // g_true^power = g * exp(logScale)
	for k := 0; k < 4; k++ {
		n := infNorm(g)
		if n == 0 {
			return 0
		}
		for i := range g {
			g[i] /= n
		}
		logScale += math.Log(n)
		sq := make([]float64, in*in)
		for i := 0; i < in; i++ {
			for l := 0; l < in; l++ {
				if a := g[i*in+l]; a != 0 {
					for j := 0; j < in; j++ {
						sq[i*in+j] += a * g[l*in+j]
					}
				}
			}
		}
		g, logScale, power = sq, 2*logScale, 2*power
	}
	lambda := math.Exp((math.Log(infNorm(g)) + logScale) / power)
	return math.Sqrt(lambda) * (1 + 1e-6) // slack for rounding
}

func TestSpectralUpper(t *testing.T) {
	// diag(3, 1, 2): norm 3.
	d := []float32{3, 0, 0, 0, 1, 0, 0, 0, 2}
	require.InDelta(t, 3, spectralUpper(d, 3), 1e-4)
	require.GreaterOrEqual(t, spectralUpper(d, 3), 3.0)
	// Rank one u vᵀ: norm |u||v|.
	u, v := []float32{1, 2, 2}, []float32{3, 4}
	var r1 []float32
	for _, a := range u {
		for _, b := range v {
			r1 = append(r1, a*b)
		}
	}
	require.InEpsilon(t, 15, spectralUpper(r1, 2), 0.01)
	require.GreaterOrEqual(t, spectralUpper(r1, 2), 15.0)
	// A random matrix: at least a power-iteration estimate (a lower bound),
	// at most the Frobenius norm.
	w := randomMatrix(9, "x", 64, 128, 1, false)
	x := make([]float64, 64)
	for i := range x {
		x[i] = 1
	}
	var est float64
	for it := 0; it < 200; it++ {
		y := make([]float64, 128)
		for r := range y {
			for c := range x {
				y[r] += float64(w[r*64+c]) * x[c]
			}
		}
		z := make([]float64, 64)
		for c := range z {
			for r := range y {
				z[c] += float64(w[r*64+c]) * y[r]
			}
		}
		var n float64
		for _, a := range z {
			n += a * a
		}
		n = math.Sqrt(n)
		est = math.Sqrt(n) // |WᵀW x| for unit x converges to ||W||²
		for i := range x {
			x[i] = z[i] / n
		}
	}
	var frob float64
	for _, a := range w {
		frob += float64(a) * float64(a)
	}
	up := spectralUpper(w, 64)
	t.Logf("power iteration %.3f <= bound %.3f <= Frobenius %.3f", est, up, math.Sqrt(frob))
	require.GreaterOrEqual(t, up, est*(1-1e-9))
	require.LessOrEqual(t, up, math.Sqrt(frob))
	require.Less(t, up, est*1.2, "bound is reasonably tight")
}

// TestOutputMarginProof proves, from the generated weights, that whatever the
// context the model's most likely next token is an emittable token of the
// other class than the current token (so never a control, byte or unknown
// token, and never the same text twice in a row), by a logit margin that makes
// anything else practically impossible even when sampling at temperature 1.
//
// It bounds the norm of the residual stream outside the two reserved
// dimensions over every possible input (RMSNorm outputs have norm ≤ √E, an
// attention head outputs a convex combination of value vectors, |silu(x)| ≤
// |x|), with spectral-norm bounds of the weights.
func TestOutputMarginProof(t *testing.T) {
	for _, opts := range []Options{{}, {Seed: 1}, {Seed: 1234, F16: true}, {Seed: -5}} {
		m := build(opts)
		get := func(name string) tensor {
			for _, tt := range m.tensors {
				if tt.name == name {
					return tt
				}
			}
			t.Fatalf("no tensor %s", name)
			return tensor{}
		}
		// rowNorm is the norm of output row r of tt without the reserved dims
		// (skipReserved) or in full.
		rowNorm := func(tt tensor, r int, skipReserved bool) float64 {
			in := int(tt.dims[0])
			var s float64
			for c, v := range tt.data[r*in : (r+1)*in] {
				if !skipReserved || (c != classADim && c != classBDim) {
					s += float64(v) * float64(v)
				}
			}
			return math.Sqrt(s)
		}
		p := defaultParams
		E := EmbeddingLen
		sqrtE := math.Sqrt(float64(E))

		// Reserved dimensions: set in every embedding, never written by a layer.
		embd := get("token_embd.weight")
		for tok := range vocab {
			for _, d := range []int{classADim, classBDim} {
				want := float32(0)
				if d == tokenClass[tok] {
					want = p.ClassValue
				}
				require.Equal(t, want, embd.data[tok*E+d])
			}
		}
		for b := 0; b < BlockCount; b++ {
			for _, n := range []string{"attn_output", "ffn_down"} {
				tt := get(fmt.Sprintf("blk.%d.%s.weight", b, n))
				in := int(tt.dims[0])
				for _, r := range []int{classADim, classBDim} {
					for _, v := range tt.data[r*in : (r+1)*in] {
						require.Zero(t, v)
					}
				}
			}
			for _, n := range []string{"attn_norm", "ffn_norm"} {
				for _, v := range get(fmt.Sprintf("blk.%d.%s.weight", b, n)).data {
					require.Equal(t, float32(1), v)
				}
			}
		}
		for _, v := range get("output_norm.weight").data {
			require.Equal(t, float32(1), v)
		}

		// M bounds |h_other| at the last layer.
		var M float64
		for tok := range vocab {
			M = math.Max(M, rowNorm(embd, tok, true))
		}
		for b := 0; b < BlockCount; b++ {
			pre := fmt.Sprintf("blk.%d.", b)
			wv, wo := get(pre+"attn_v.weight"), get(pre+"attn_output.weight")
			var heads float64
			for h := 0; h < HeadCount; h++ {
				n := spectralUpper(wv.data[h*HeadDim*E:(h+1)*HeadDim*E], E)
				heads += n * n
			}
			M += spectralUpper(wo.data, E) * math.Sqrt(heads) * sqrtE
			wg, wu, wd := get(pre+"ffn_gate.weight"), get(pre+"ffn_up.weight"), get(pre+"ffn_down.weight")
			var maxGateRow float64
			for r := 0; r < FeedForwardLen; r++ {
				maxGateRow = math.Max(maxGateRow, rowNorm(wg, r, false))
			}
			M += spectralUpper(wd.data, FeedForwardLen) * maxGateRow * sqrtE * spectralUpper(wu.data, E) * sqrtE
		}

		// Logit of token v before the common positive factor √E/rms(h):
		// out[v,c]*ClassValue + out[v,other]·h_other, for the current token's
		// class dimension c.
		out := get("output.weight")
		worstGap := math.Inf(1)
		for _, c := range []int{classADim, classBDim} {
			lowOther, highRest := math.Inf(1), math.Inf(-1)
			for v := range vocab {
				fixed := float64(out.data[v*E+c]) * float64(p.ClassValue)
				spread := rowNorm(out, v, true) * M
				if Emittable(v) && tokenClass[v] != c {
					lowOther = math.Min(lowOther, fixed-spread)
				} else {
					highRest = math.Max(highRest, fixed+spread)
				}
			}
			worstGap = math.Min(worstGap, lowOther-highRest)
		}
		// The common factor is at least √E/|h| with |h|² ≤ ClassValue² + M².
		factor := sqrtE / math.Sqrt(float64(p.ClassValue*p.ClassValue)+M*M)
		t.Logf("%+v: |h_other| <= %.1f, logit gap >= %.0f x %.3f = %.1f", opts, M, worstGap, factor, worstGap*factor)
		require.Greater(t, worstGap*factor, 20.0, "reserved dimensions do not dominate for %+v", opts)
	}
}

func TestWriteError(t *testing.T) {
	err := Write(failingWriter{}, Options{})
	require.Error(t, err)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
