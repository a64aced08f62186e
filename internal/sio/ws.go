// Package sio is a small, allocation-free codec for the subset of WebSocket
// (RFC 6455), Engine.IO v4 and Socket.IO v5 that the load tool and its
// baseline relay speak: the websocket transport only, text frames, one
// Engine.IO packet per frame, no compression, no binary attachments.
//
// It exists so that the measuring instrument costs as little CPU as possible
// per delivery; it is not a general Socket.IO implementation.
package sio

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// WebSocket opcodes.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Errors of the frame reader.
var (
	ErrProtocol = errors.New("sio: websocket protocol error")
	ErrTooLarge = errors.New("sio: websocket message too large")
)

// MaxFrameHeader is the longest header AppendFrame writes (masked, 64-bit length).
const MaxFrameHeader = 14

// AppendFrameHeader appends the header of one final (FIN) frame of n payload
// bytes; with mask non-nil the frame is marked masked and the key follows.
func AppendFrameHeader(dst []byte, op byte, n int, mask *[4]byte) []byte {
	var m byte
	if mask != nil {
		m = 0x80
	}
	switch {
	case n < 126:
		dst = append(dst, 0x80|op, m|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|op, m|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if mask != nil {
		dst = append(dst, mask[:]...)
	}
	return dst
}

// AppendFrame appends one complete final frame carrying payload. Clients
// must mask (RFC 6455 5.3): pass a key; servers pass nil.
func AppendFrame(dst []byte, op byte, payload []byte, mask *[4]byte) []byte {
	dst = AppendFrameHeader(dst, op, len(payload), mask)
	start := len(dst)
	dst = append(dst, payload...)
	if mask != nil {
		Mask(dst[start:], mask)
	}
	return dst
}

// Mask applies (and removes) a websocket masking key to b in place.
func Mask(b []byte, key *[4]byte) {
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// FrameReader reads frames from a buffered connection. Data messages split
// into fragments are joined; control frames are returned as they come.
type FrameReader struct {
	R   *bufio.Reader
	Max int // largest message accepted; 0 means 1 MiB

	pending int    // bytes of the last peeked payload still to discard
	frag    byte   // opcode of the fragmented message in progress, 0 if none
	buf     []byte // payloads that do not fit the reader's buffer, fragments
}

// Next returns the next message: its opcode and its payload, unmasked. The
// payload aliases an internal buffer and is valid until the next call.
func (fr *FrameReader) Next() (op byte, payload []byte, err error) {
	if fr.pending > 0 {
		if _, err := fr.R.Discard(fr.pending); err != nil {
			return 0, nil, err
		}
		fr.pending = 0
	}
	limit := fr.Max
	if limit <= 0 {
		limit = 1 << 20
	}
	for {
		fin, op, n, mask, err := fr.header()
		if err != nil {
			return 0, nil, err
		}
		if op >= OpClose { // control frame: may come between fragments
			if !fin || n > 125 {
				return 0, nil, ErrProtocol
			}
			p, err := fr.peek(n, mask)
			return op, p, err
		}
		if (op == OpContinuation) != (fr.frag != 0) {
			return 0, nil, ErrProtocol
		}
		if fin && op != OpContinuation {
			if n > limit {
				return 0, nil, ErrTooLarge
			}
			if n <= fr.R.Size() {
				p, err := fr.peek(n, mask)
				return op, p, err
			}
			fr.buf = fr.buf[:0]
			p, err := fr.readInto(n, mask)
			return op, p, err
		}
		if op != OpContinuation {
			fr.frag, fr.buf = op, fr.buf[:0]
		}
		if len(fr.buf)+n > limit {
			return 0, nil, ErrTooLarge
		}
		p, err := fr.readInto(n, mask)
		if err != nil {
			return 0, nil, err
		}
		if fin {
			op, fr.frag = fr.frag, 0
			return op, p, nil
		}
	}
}

func (fr *FrameReader) header() (fin bool, op byte, n int, mask *[4]byte, err error) {
	h, err := fr.R.Peek(2)
	if err != nil {
		return false, 0, 0, nil, err
	}
	b0, b1 := h[0], h[1]
	if b0&0x70 != 0 { // RSV bits: no extension was negotiated
		return false, 0, 0, nil, ErrProtocol
	}
	size := 2
	switch b1 & 0x7F {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	masked := b1&0x80 != 0
	if masked {
		size += 4
	}
	h, err = fr.R.Peek(size)
	if err != nil {
		return false, 0, 0, nil, err
	}
	var length uint64
	switch b1 & 0x7F {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:])
	default:
		length = uint64(b1 & 0x7F)
	}
	if length > 1<<31 {
		return false, 0, 0, nil, ErrTooLarge
	}
	if masked {
		var k [4]byte
		copy(k[:], h[size-4:])
		mask = &k
	}
	if _, err := fr.R.Discard(size); err != nil {
		return false, 0, 0, nil, err
	}
	return b0&0x80 != 0, b0 & 0x0F, int(length), mask, nil
}

// peek returns n payload bytes in place in the reader's buffer; they are
// discarded on the next call.
func (fr *FrameReader) peek(n int, mask *[4]byte) ([]byte, error) {
	p, err := fr.R.Peek(n)
	if err != nil {
		return nil, err
	}
	if mask != nil {
		Mask(p, mask)
	}
	fr.pending = n
	return p, nil
}

// readInto appends n payload bytes to fr.buf and returns all of fr.buf.
func (fr *FrameReader) readInto(n int, mask *[4]byte) ([]byte, error) {
	start := len(fr.buf)
	if cap(fr.buf)-start < n {
		nb := make([]byte, start, start+n)
		copy(nb, fr.buf)
		fr.buf = nb
	}
	fr.buf = fr.buf[:start+n]
	if _, err := io.ReadFull(fr.R, fr.buf[start:]); err != nil {
		return nil, err
	}
	if mask != nil {
		Mask(fr.buf[start:], mask)
	}
	return fr.buf, nil
}

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey is the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// ClientHandshake upgrades conn to a websocket for path (with its query) on
// host. It returns a reader of readBuf bytes positioned after the response:
// the server may send its first frame in the same segment.
func ClientHandshake(conn net.Conn, host, path string, header http.Header, readBuf int) (*bufio.Reader, error) {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, host, key)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, fmt.Errorf("sio: websocket handshake: %w", err)
	}
	br := bufio.NewReaderSize(conn, readBuf)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("sio: websocket handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("sio: websocket handshake: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != AcceptKey(key) {
		return nil, fmt.Errorf("sio: websocket handshake: bad Sec-WebSocket-Accept %q", got)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		return nil, fmt.Errorf("sio: websocket handshake: unrequested extension %q", ext)
	}
	return br, nil
}

// Accept upgrades a server request to a websocket (no subprotocol, no
// extension) and hijacks the connection. The reader holds whatever the
// client sent after its request.
func Accept(w http.ResponseWriter, r *http.Request) (net.Conn, *bufio.Reader, error) {
	if r.Method != http.MethodGet || !headerHas(r.Header, "Connection", "upgrade") ||
		!headerHas(r.Header, "Upgrade", "websocket") || r.Header.Get("Sec-WebSocket-Version") != "13" {
		http.Error(w, "websocket upgrade required", http.StatusBadRequest)
		return nil, nil, errors.New("sio: not a websocket upgrade")
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" {
		http.Error(w, "missing Sec-WebSocket-Key", http.StatusBadRequest)
		return nil, nil, errors.New("sio: missing Sec-WebSocket-Key")
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return nil, nil, errors.New("sio: response writer cannot hijack")
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("sio: hijack: %w", err)
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		AcceptKey(key) + "\r\n\r\n"
	if _, err := io.WriteString(conn, resp); err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("sio: websocket handshake: %w", err)
	}
	return conn, rw.Reader, nil
}

// headerHas reports whether a comma-separated header lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
