package sio

import (
	"bytes"
	"errors"
	"strconv"
)

// Engine.IO v4 packet types, the first byte of every websocket message.
const (
	EIOOpen    byte = '0'
	EIOClose   byte = '1'
	EIOPing    byte = '2'
	EIOPong    byte = '3'
	EIOMessage byte = '4'
	EIOUpgrade byte = '5'
	EIONoop    byte = '6'
)

// Socket.IO v5 packet types, the byte after EIOMessage.
const (
	Connect      byte = '0'
	Disconnect   byte = '1'
	Event        byte = '2'
	Ack          byte = '3'
	ConnectError byte = '4'
	BinaryEvent  byte = '5'
	BinaryAck    byte = '6'
)

// ErrPacket reports a packet this codec cannot parse.
var ErrPacket = errors.New("sio: malformed packet")

// Packet is one Socket.IO packet. Its slices alias the parsed message.
type Packet struct {
	Type byte
	Nsp  []byte // "/" when the packet names no namespace
	ID   int64  // acknowledgement id, -1 when absent
	Data []byte // raw JSON, empty when absent
}

var rootNsp = []byte("/")

// ParsePacket parses the Socket.IO packet carried by an Engine.IO message
// (msg starts with EIOMessage).
func ParsePacket(msg []byte) (Packet, error) {
	if len(msg) < 2 || msg[0] != EIOMessage {
		return Packet{}, ErrPacket
	}
	p := Packet{Type: msg[1], Nsp: rootNsp, ID: -1}
	if p.Type < Connect || p.Type > BinaryAck {
		return Packet{}, ErrPacket
	}
	b := msg[2:]
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		return Packet{}, ErrPacket // attachments are not part of this subset
	}
	if len(b) > 0 && b[0] == '/' {
		end := bytes.IndexByte(b, ',')
		if end < 0 {
			p.Nsp, b = b, nil
		} else {
			p.Nsp, b = b[:end], b[end+1:]
		}
	}
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i > 0 {
		if i > 15 {
			return Packet{}, ErrPacket
		}
		id, _ := strconv.ParseInt(string(b[:i]), 10, 64)
		p.ID = id
	}
	p.Data = b[i:]
	return p, nil
}

// AppendPacket appends the Engine.IO message carrying one Socket.IO packet:
// '4', the type, the namespace unless it is "/", the id if >= 0, the data.
func AppendPacket(dst []byte, typ byte, nsp string, id int64, data []byte) []byte {
	dst = append(dst, EIOMessage, typ)
	if nsp != "" && nsp != "/" {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	if id >= 0 {
		dst = strconv.AppendInt(dst, id, 10)
	}
	return append(dst, data...)
}

// AppendEvent appends an EVENT packet: 42/nsp,id["name",args...] where each
// arg is raw JSON.
func AppendEvent(dst []byte, nsp string, id int64, name string, args ...[]byte) []byte {
	dst = AppendPacket(dst, Event, nsp, id, nil)
	dst = append(dst, '[')
	dst = AppendString(dst, name)
	for _, a := range args {
		dst = append(dst, ',')
		dst = append(dst, a...)
	}
	return append(dst, ']')
}

// SplitEvent splits an EVENT or ACK packet's data, a JSON array, into the
// event name (empty for ACK data, whose array holds arguments only) and the
// raw arguments after it, still comma-separated.
func SplitEvent(data []byte, named bool) (name, args []byte, err error) {
	data = trimSpace(data)
	if len(data) < 2 || data[0] != '[' || data[len(data)-1] != ']' {
		return nil, nil, ErrPacket
	}
	body := trimSpace(data[1 : len(data)-1])
	if !named {
		return nil, body, nil
	}
	if len(body) == 0 || body[0] != '"' {
		return nil, nil, ErrPacket
	}
	end, err := skipString(body, 0)
	if err != nil {
		return nil, nil, err
	}
	name = body[1 : end-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		return nil, nil, ErrPacket // escaped event names are not part of this subset
	}
	rest := trimSpace(body[end:])
	if len(rest) > 0 {
		if rest[0] != ',' {
			return nil, nil, ErrPacket
		}
		rest = trimSpace(rest[1:])
	}
	return name, rest, nil
}
