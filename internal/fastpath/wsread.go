package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	ws "github.com/gorilla/websocket"

	"github.com/turumba/realtime/internal/sio"
)

// frameReader reads a client's websocket frames (RFC 6455, server side)
// straight from the connection. It holds no buffer between messages: each
// message is read into a slice of its own size, which the engine keeps, and
// a connection waiting for its client costs only this struct. (Gorilla's
// reader, which the library's upgrader sets up, keeps a 1 KB read buffer
// and a 1 KB write buffer for the connection's life.) Reading a header
// takes two small reads; clients send little.
type frameReader struct {
	r     io.Reader
	limit int64 // the largest message accepted

	hdr  [14]byte // the frame header being read
	frag byte     // opcode of the fragmented message in progress, 0 if none
	buf  []byte   // the fragments so far
}

// protocolError is a frame the client must not send, with the close code
// to answer it with.
type protocolError struct {
	code int
	msg  string
}

func (e *protocolError) Error() string { return "websocket: " + e.msg }

func violation(code int, format string, args ...any) error {
	return &protocolError{code: code, msg: fmt.Sprintf(format, args...)}
}

// next returns the next control frame, or the next data message with its
// fragments joined, unmasked; the payload is the caller's. io.EOF means the
// client closed the connection between frames.
func (fr *frameReader) next() (op byte, payload []byte, err error) {
	for {
		fin, op, n, key, err := fr.header()
		if err != nil {
			return 0, nil, err
		}
		if op >= sio.OpClose { // control frames may come between fragments
			p, err := fr.payload(nil, n, &key)
			return op, p, err
		}
		if (op == sio.OpContinuation) != (fr.frag != 0) {
			return 0, nil, violation(ws.CloseProtocolError, "continuation frame out of place (opcode %d)", op)
		}
		if int64(len(fr.buf))+n > fr.limit {
			fr.buf = nil
			return 0, nil, violation(ws.CloseMessageTooBig, "message over %d bytes", fr.limit)
		}
		if fin && op != sio.OpContinuation { // a whole message in one frame
			p, err := fr.payload(make([]byte, 0, n), n, &key)
			return op, p, err
		}
		if op != sio.OpContinuation {
			fr.frag = op
		}
		if fr.buf, err = fr.payload(fr.buf, n, &key); err != nil {
			return 0, nil, err
		}
		if fin {
			op, p := fr.frag, fr.buf
			fr.frag, fr.buf = 0, nil
			return op, p, nil
		}
	}
}

// header reads one frame header and checks what a server must refuse.
func (fr *frameReader) header() (fin bool, op byte, n int64, key [4]byte, err error) {
	b := fr.hdr[:2]
	if _, err = io.ReadFull(fr.r, b); err != nil {
		return
	}
	fin, op = b[0]&0x80 != 0, b[0]&0x0F
	switch {
	case b[0]&0x70 != 0:
		err = violation(ws.CloseProtocolError, "reserved bits set; no extension was negotiated")
		return
	case op > sio.OpBinary && op < sio.OpClose || op > sio.OpPong:
		err = violation(ws.CloseProtocolError, "unknown opcode %d", op)
		return
	case b[1]&0x80 == 0:
		err = violation(ws.CloseProtocolError, "unmasked frame from a client")
		return
	}
	ext := 0
	switch b[1] & 0x7F {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	h := fr.hdr[2 : 2+ext+4]
	if _, err = io.ReadFull(fr.r, h); err != nil {
		err = unexpected(err)
		return
	}
	switch ext {
	case 0:
		n = int64(b[1] & 0x7F)
	case 2:
		n = int64(binary.BigEndian.Uint16(h))
	case 8:
		u := binary.BigEndian.Uint64(h)
		if u > 1<<62 {
			err = violation(ws.CloseProtocolError, "frame length %d", u)
			return
		}
		n = int64(u)
	}
	copy(key[:], h[ext:])
	if op >= sio.OpClose && (!fin || n > 125) {
		err = violation(ws.CloseProtocolError, "fragmented or long control frame")
	}
	return
}

// payload appends the frame's n bytes to dst, unmasked.
func (fr *frameReader) payload(dst []byte, n int64, key *[4]byte) ([]byte, error) {
	start := len(dst)
	dst = slices.Grow(dst, int(n))[:start+int(n)]
	if _, err := io.ReadFull(fr.r, dst[start:]); err != nil {
		return nil, unexpected(err)
	}
	sio.Mask(dst[start:], key)
	return dst, nil
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// closeReply is the close frame that answers a client's close frame with
// payload p, or a protocol error when p is not a valid close payload.
func closeReply(p []byte) ([]byte, error) {
	if len(p) == 0 {
		return frame(ws.CloseMessage, nil), nil
	}
	if len(p) == 1 {
		return nil, violation(ws.CloseProtocolError, "close frame of one byte")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return nil, violation(ws.CloseProtocolError, "close code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return nil, violation(ws.CloseInvalidFramePayloadData, "close reason is not UTF-8")
	}
	return frame(ws.CloseMessage, ws.FormatCloseMessage(code, "")), nil
}

// validCloseCode reports whether a client may send code (RFC 6455 7.4).
func validCloseCode(code int) bool {
	switch code {
	case ws.CloseNormalClosure, ws.CloseGoingAway, ws.CloseProtocolError, ws.CloseUnsupportedData,
		ws.CloseInvalidFramePayloadData, ws.ClosePolicyViolation, ws.CloseMessageTooBig,
		ws.CloseMandatoryExtension, ws.CloseInternalServerErr, ws.CloseServiceRestart, ws.CloseTryAgainLater:
		return true
	}
	return code >= 3000 && code <= 4999
}
