package registry

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Codec turns a value into the bytes stored in etcd and back.
type Codec[T any] interface {
	Marshal(v T) ([]byte, error)
	Unmarshal(data []byte) (T, error)
}

// ProtoJSON stores protobuf messages as protojson, so `etcdctl get` shows readable values and
// any language can decode them.
func ProtoJSON[T proto.Message](newT func() T) Codec[T] {
	return protoJSONCodec[T]{newT: newT}
}

type protoJSONCodec[T proto.Message] struct{ newT func() T }

func (c protoJSONCodec[T]) Marshal(v T) ([]byte, error) { return protojson.Marshal(v) }

func (c protoJSONCodec[T]) Unmarshal(data []byte) (T, error) {
	v := c.newT()
	// Newer writers may add fields; a reader must not drop the whole record for that.
	err := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, v)
	return v, err
}

// Raw keeps values as the bytes etcd holds, for keys whose presence is what matters (service
// instances, counted by the router) or whose format is another library's.
func Raw() Codec[[]byte] { return rawCodec{} }

type rawCodec struct{}

func (rawCodec) Marshal(v []byte) ([]byte, error)      { return v, nil }
func (rawCodec) Unmarshal(data []byte) ([]byte, error) { return data, nil }
