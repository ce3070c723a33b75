// Package tinymodel writes a tiny, deterministic GGUF model for tests.
//
// The model is a real llama-architecture network (2 layers, embedding 64,
// 4 heads, feed-forward 128, context 256) with a SentencePiece-style
// vocabulary of a few hundred tokens. Its weights are pseudo-random from a
// seed, so its text is gibberish, but its output layer is biased so that it
// only ever emits printable-ASCII tokens: never end-of-sequence, control,
// unknown or byte tokens. Every generation therefore runs to its token limit,
// which makes token counts in tests exact, and the text is always valid UTF-8
// (llama.cpp rejects invalid UTF-8 output).
//
// How the bias works (details at classADim): every token has one of two
// classes, marked in two reserved residual dimensions that no layer writes
// to, and output.weight uses them so that the next token is always an
// emittable token of the other class. The model thus never repeats a token
// text twice in a row either, which Ollama would otherwise cut short after 30
// repeats. The package tests prove the margins from the weights, for every
// possible context.
//
// The text does depend on the prompt, and at temperature 0 it is the same
// every time, but it differs between engines after a few tokens.
//
// The same Options always give a byte-identical file. The generator uses only
// integer arithmetic and single float32 multiplications, so the bytes do not
// depend on the platform.
package tinymodel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Shape of the model. These are fixed; BACKENDS.md documents them.
const (
	Architecture   = "llama"
	BlockCount     = 2
	EmbeddingLen   = 64
	HeadCount      = 4
	HeadCountKV    = 4
	FeedForwardLen = 128
	ContextLen     = 256
	HeadDim        = EmbeddingLen / HeadCount
	Alignment      = 32
	RMSEpsilon     = 1e-5
	RopeFreqBase   = 10000
)

// Special token ids.
const (
	UnkID = 0
	BOSID = 1
	EOSID = 2
	// ByteTokenBase is the id of <0x00>; byte b is ByteTokenBase+b.
	ByteTokenBase = 3
)

// SentencePiece token types, as stored in tokenizer.ggml.token_type.
const (
	TokenNormal  = 1
	TokenUnknown = 2
	TokenControl = 3
	TokenByte    = 6
)

// DefaultName is general.name when Options.Name is empty.
const DefaultName = "sollol-tiny"

// Options select the model's weights and encoding. The zero value is valid:
// seed 0, f32 weights, name DefaultName.
type Options struct {
	// Seed selects the pseudo-random weights. Different seeds give different
	// (but equally well-behaved) models.
	Seed int64
	// F16 stores the matrices as float16 (norm vectors stay float32), which
	// roughly halves the file.
	F16 bool
	// Name is general.name; DefaultName when empty.
	Name string
}

// Write writes the model as GGUF v3 to w.
func Write(w io.Writer, opts Options) error {
	m := build(opts)
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := m.encode(bw); err != nil {
		return err
	}
	return bw.Flush()
}

// WriteFile writes the model to path, atomically (a temporary file in the
// same folder is renamed into place).
func WriteFile(path string, opts Options) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tinymodel-*.gguf")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := Write(f, opts); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Bytes returns the model as GGUF v3.
func Bytes(opts Options) []byte {
	var b bytes.Buffer
	_ = Write(&b, opts) // writing to a bytes.Buffer cannot fail
	return b.Bytes()
}

// Token is one vocabulary entry.
type Token struct {
	Piece string
	Score float32
	Type  int32
}

// Vocabulary returns the model's tokens, indexed by token id.
func Vocabulary() []Token { return append([]Token(nil), vocab...) }

// Emittable reports whether the model can generate token id: only normal
// tokens, which all decode to printable ASCII.
func Emittable(id int) bool {
	return id >= 0 && id < len(vocab) && vocab[id].Type == TokenNormal
}

// spaceMarker is SentencePiece's stand-in for a space.
const spaceMarker = "▁"

// words are whole-word tokens. Their prefixes are added too, so that the
// SentencePiece merge algorithm can actually produce them from characters.
var words = []string{
	"the", "and", "to", "of", "in", "is", "it", "you", "that", "hello",
	"world", "mesh", "model", "token", "test", "node", "route", "llama",
}

var vocab = buildVocab()

func buildVocab() []Token {
	v := []Token{
		{"<unk>", 0, TokenUnknown},
		{"<s>", 0, TokenControl},
		{"</s>", 0, TokenControl},
	}
	for b := 0; b < 256; b++ {
		v = append(v, Token{fmt.Sprintf("<0x%02X>", b), 0, TokenByte})
	}
	seen := map[string]bool{}
	add := func(piece string, score float32) {
		if seen[piece] {
			return
		}
		seen[piece] = true
		v = append(v, Token{piece, score, TokenNormal})
	}
	// Printable ASCII, with the space as SentencePiece's marker.
	add(spaceMarker, 0)
	for c := byte('!'); c <= '~'; c++ {
		add(string(c), 0)
	}
	// Whole words with a leading space marker and every prefix of at least
	// two characters; longer pieces score higher so merges prefer them.
	for _, w := range words {
		full := spaceMarker + w
		for n := 2; n <= utf8.RuneCountInString(full); n++ {
			prefix := string([]rune(full)[:n])
			add(prefix, float32(n))
		}
	}
	return v
}

// ---------------------------------------------------------------------------
// Model construction.

// Every token belongs to one of two classes, A and B, and two residual
// dimensions are reserved for them: a class-A token's embedding holds
// params.ClassValue in dimension classADim and 0 in classBDim, a class-B
// token's the reverse. No layer writes to these dimensions (their rows of
// attn_output and ffn_down are zero), so at the last position they still say
// which class the current token has. output.weight gives every token of a
// class a large negative weight on that class's dimension, and every
// non-emittable token an even larger negative weight on both. So the next
// token is always an emittable token of the other class: never a control,
// unknown or byte token, and never the same text as the current one (tokens
// whose text is the same up to spaces share a class). The latter matters:
// Ollama ends a generation early, without a final "done" chunk, once the same
// token text repeats 30 times in a row.
//
// The token that may come next gets no offset, so samplers' repetition
// penalties (which scale logits by sign) behave as with any model.
const (
	classADim = 0
	classBDim = 1
)

// params are the weight scales. TestOutputMarginProof checks, from the
// weights, that the reserved dimensions dominate whatever the context.
type params struct {
	ClassValue   float32 // token_embd[.., class dim]
	EmbedScale   float32 // other token_embd entries: uniform ±EmbedScale
	QKScale      float32 // attn_q, attn_k
	VOScale      float32 // attn_v, attn_output
	FFNScale     float32 // ffn_gate, ffn_up, ffn_down
	OutputScale  float32 // output.weight, other dimensions
	ClassWeight  float32 // -output.weight[tok, its class dim] for emittable tokens
	DisallowBias float32 // -output.weight[tok, both class dims] for the others
}

var defaultParams = params{
	ClassValue:   4,
	EmbedScale:   1,
	QKScale:      0.5,
	VOScale:      0.3,
	FFNScale:     0.1,
	OutputScale:  1,
	ClassWeight:  2048,
	DisallowBias: 4096,
}

// tokenClass holds each token's class dimension, classADim or classBDim.
// Emittable tokens are grouped by their text without spaces, and the groups
// alternate between the classes in vocabulary order; the others alternate by
// id.
var tokenClass = buildClasses()

func buildClasses() []int {
	c := make([]int, len(vocab))
	group := map[string]int{}
	next := classADim
	for id, t := range vocab {
		if t.Type != TokenNormal {
			c[id] = []int{classADim, classBDim}[id%2]
			continue
		}
		key := strings.TrimSpace(strings.ReplaceAll(t.Piece, spaceMarker, " "))
		if _, ok := group[key]; !ok {
			group[key] = next
			next = classADim + classBDim - next
		}
		c[id] = group[key]
	}
	return c
}

type tensor struct {
	name string
	dims []uint64 // ggml order: dims[0] is the contiguous dimension
	f16  bool
	data []float32 // when f16, every value is exactly representable in f16
}

type kv struct {
	key string
	val any // string, uint32, int32, float32, bool, []string, []float32, []int32
}

type model struct {
	kvs     []kv
	tensors []tensor
}

func build(opts Options) *model {
	name := opts.Name
	if name == "" {
		name = DefaultName
	}
	fileType := uint32(0) // ALL_F32
	if opts.F16 {
		fileType = 1 // MOSTLY_F16
	}

	pieces := make([]string, len(vocab))
	scores := make([]float32, len(vocab))
	types := make([]int32, len(vocab))
	for i, t := range vocab {
		pieces[i], scores[i], types[i] = t.Piece, t.Score, t.Type
	}

	m := &model{kvs: []kv{
		{"general.architecture", Architecture},
		{"general.name", name},
		{"general.file_type", fileType},
		{"general.quantization_version", uint32(2)},
		{"general.alignment", uint32(Alignment)},
		{"llama.context_length", uint32(ContextLen)},
		{"llama.embedding_length", uint32(EmbeddingLen)},
		{"llama.block_count", uint32(BlockCount)},
		{"llama.feed_forward_length", uint32(FeedForwardLen)},
		{"llama.attention.head_count", uint32(HeadCount)},
		{"llama.attention.head_count_kv", uint32(HeadCountKV)},
		{"llama.rope.dimension_count", uint32(HeadDim)},
		{"llama.rope.freq_base", float32(RopeFreqBase)},
		{"llama.attention.layer_norm_rms_epsilon", float32(RMSEpsilon)},
		{"llama.vocab_size", uint32(len(vocab))},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", pieces},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(BOSID)},
		{"tokenizer.ggml.eos_token_id", uint32(EOSID)},
		{"tokenizer.ggml.unknown_token_id", uint32(UnkID)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_eos_token", false},
	}}

	seed := uint64(opts.Seed)
	f16 := opts.F16
	nVocab := uint64(len(vocab))

	p := defaultParams

	// token_embd: [EmbeddingLen, nVocab].
	embd := randomMatrix(seed, "token_embd.weight", EmbeddingLen, int(nVocab), p.EmbedScale, f16)
	for tok := 0; tok < int(nVocab); tok++ {
		embd[tok*EmbeddingLen+classADim] = 0
		embd[tok*EmbeddingLen+classBDim] = 0
		embd[tok*EmbeddingLen+tokenClass[tok]] = p.ClassValue
	}
	m.add("token_embd.weight", []uint64{EmbeddingLen, nVocab}, f16, embd)

	matrix := func(name string, in, out int, scale float32) []float32 {
		return randomMatrix(seed, name, in, out, scale, f16)
	}
	for b := 0; b < BlockCount; b++ {
		pre := fmt.Sprintf("blk.%d.", b)
		m.add(pre+"attn_norm.weight", []uint64{EmbeddingLen}, false, ones(EmbeddingLen))
		for _, n := range []string{"attn_q", "attn_k", "attn_v"} {
			scale := p.QKScale
			if n == "attn_v" {
				scale = p.VOScale
			}
			m.add(pre+n+".weight", []uint64{EmbeddingLen, EmbeddingLen}, f16,
				matrix(pre+n+".weight", EmbeddingLen, EmbeddingLen, scale))
		}
		wo := matrix(pre+"attn_output.weight", EmbeddingLen, EmbeddingLen, p.VOScale)
		zeroRows(wo, EmbeddingLen, classADim, classBDim)
		m.add(pre+"attn_output.weight", []uint64{EmbeddingLen, EmbeddingLen}, f16, wo)

		m.add(pre+"ffn_norm.weight", []uint64{EmbeddingLen}, false, ones(EmbeddingLen))
		m.add(pre+"ffn_gate.weight", []uint64{EmbeddingLen, FeedForwardLen}, f16,
			matrix(pre+"ffn_gate.weight", EmbeddingLen, FeedForwardLen, p.FFNScale))
		m.add(pre+"ffn_up.weight", []uint64{EmbeddingLen, FeedForwardLen}, f16,
			matrix(pre+"ffn_up.weight", EmbeddingLen, FeedForwardLen, p.FFNScale))
		wd := matrix(pre+"ffn_down.weight", FeedForwardLen, EmbeddingLen, p.FFNScale)
		zeroRows(wd, FeedForwardLen, classADim, classBDim)
		m.add(pre+"ffn_down.weight", []uint64{FeedForwardLen, EmbeddingLen}, f16, wd)
	}

	m.add("output_norm.weight", []uint64{EmbeddingLen}, false, ones(EmbeddingLen))

	out := matrix("output.weight", EmbeddingLen, int(nVocab), p.OutputScale)
	for tok := 0; tok < int(nVocab); tok++ {
		if Emittable(tok) {
			out[tok*EmbeddingLen+classADim] = 0
			out[tok*EmbeddingLen+classBDim] = 0
			out[tok*EmbeddingLen+tokenClass[tok]] = -p.ClassWeight
		} else {
			out[tok*EmbeddingLen+classADim] = -p.DisallowBias
			out[tok*EmbeddingLen+classBDim] = -p.DisallowBias
		}
	}
	m.add("output.weight", []uint64{EmbeddingLen, nVocab}, f16, out)
	return m
}

func (m *model) add(name string, dims []uint64, f16 bool, data []float32) {
	m.tensors = append(m.tensors, tensor{name: name, dims: dims, f16: f16, data: data})
}

func ones(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// zeroRows clears output rows of a row-major matrix with rows of length in.
func zeroRows(w []float32, in int, rows ...int) {
	for _, r := range rows {
		clear(w[r*in : (r+1)*in])
	}
}

// randomMatrix returns rows*in values, uniform in [-scale, scale), from a
// stream that depends only on the seed and the tensor name.
func randomMatrix(seed uint64, name string, in, rows int, scale float32, f16 bool) []float32 {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := splitmix64{state: seed ^ h.Sum64()}
	s := make([]float32, in*rows)
	for i := range s {
		// 24 random bits -> [-1, 1) exactly, then one rounding multiply.
		u := float32(int32(r.next()>>40)-(1<<23)) / (1 << 23)
		v := u * scale
		if f16 {
			v = f16ToF32(f32ToF16(v))
		}
		s[i] = v
	}
	return s
}

type splitmix64 struct{ state uint64 }

func (s *splitmix64) next() uint64 {
	s.state += 0x9e3779b97f4a7c15
	z := s.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// f32ToF16 converts with round-to-nearest-even, using integer operations only.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign
	case exp >= 0x1f: // overflow (no inf/NaN inputs here)
		return sign | 0x7c00
	case exp <= 0: // subnormal or underflow
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		half := uint32(1) << (shift - 1)
		rest := mant & (1<<shift - 1)
		v := mant >> shift
		if rest > half || (rest == half && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	default:
		v := uint32(exp)<<10 | mant>>13
		rest := mant & 0x1fff
		if rest > 0x1000 || (rest == 0x1000 && v&1 == 1) {
			v++ // may carry into the exponent, which is still correct
		}
		return sign | uint16(v)
	}
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// ---------------------------------------------------------------------------
// GGUF encoding.

// GGUF constants.
const (
	Magic   = "GGUF"
	Version = 3
)

// GGUF metadata value types.
const (
	typeUint32  = 4
	typeInt32   = 5
	typeFloat32 = 6
	typeBool    = 7
	typeString  = 8
	typeArray   = 9
)

// ggml tensor types.
const (
	ggmlF32 = 0
	ggmlF16 = 1
)

type encoder struct {
	w   io.Writer
	n   int64
	err error
}

func (e *encoder) write(p []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(p)
	e.n += int64(n)
	e.err = err
}

func (e *encoder) u32(v uint32) { e.write(binary.LittleEndian.AppendUint32(nil, v)) }
func (e *encoder) u64(v uint64) { e.write(binary.LittleEndian.AppendUint64(nil, v)) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.write([]byte(s)) }

func (e *encoder) pad() {
	if r := e.n % Alignment; r != 0 {
		e.write(make([]byte, Alignment-r))
	}
}

func (e *encoder) value(v any) {
	switch v := v.(type) {
	case string:
		e.u32(typeString)
		e.str(v)
	case uint32:
		e.u32(typeUint32)
		e.u32(v)
	case int32:
		e.u32(typeInt32)
		e.u32(uint32(v))
	case float32:
		e.u32(typeFloat32)
		e.u32(math.Float32bits(v))
	case bool:
		e.u32(typeBool)
		if v {
			e.write([]byte{1})
		} else {
			e.write([]byte{0})
		}
	case []string:
		e.u32(typeArray)
		e.u32(typeString)
		e.u64(uint64(len(v)))
		for _, s := range v {
			e.str(s)
		}
	case []float32:
		e.u32(typeArray)
		e.u32(typeFloat32)
		e.u64(uint64(len(v)))
		for _, f := range v {
			e.u32(math.Float32bits(f))
		}
	case []int32:
		e.u32(typeArray)
		e.u32(typeInt32)
		e.u64(uint64(len(v)))
		for _, i := range v {
			e.u32(uint32(i))
		}
	default:
		if e.err == nil {
			e.err = fmt.Errorf("tinymodel: unsupported metadata type %T", v)
		}
	}
}

func (t *tensor) size() uint64 {
	if t.f16 {
		return uint64(len(t.data)) * 2
	}
	return uint64(len(t.data)) * 4
}

func alignUp(n uint64) uint64 { return (n + Alignment - 1) / Alignment * Alignment }

func (m *model) encode(w io.Writer) error {
	e := &encoder{w: w}
	e.write([]byte(Magic))
	e.u32(Version)
	e.u64(uint64(len(m.tensors)))
	e.u64(uint64(len(m.kvs)))
	for _, kv := range m.kvs {
		e.str(kv.key)
		e.value(kv.val)
	}
	var off uint64
	for i := range m.tensors {
		t := &m.tensors[i]
		n := uint64(1)
		for _, d := range t.dims {
			n *= d
		}
		if n != uint64(len(t.data)) {
			return fmt.Errorf("tinymodel: tensor %s: dims %v do not match %d values", t.name, t.dims, len(t.data))
		}
		e.str(t.name)
		e.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			e.u64(d)
		}
		if t.f16 {
			e.u32(ggmlF16)
		} else {
			e.u32(ggmlF32)
		}
		e.u64(off)
		off = alignUp(off + t.size())
	}
	e.pad()
	for i := range m.tensors {
		t := &m.tensors[i]
		buf := make([]byte, 0, t.size())
		for _, v := range t.data {
			if t.f16 {
				buf = binary.LittleEndian.AppendUint16(buf, f32ToF16(v))
			} else {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
		}
		e.write(buf)
		e.pad()
	}
	if e.err != nil {
		return fmt.Errorf("tinymodel: %w", e.err)
	}
	return nil
}
