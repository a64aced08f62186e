package loadclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turumba/realtime/internal/loadstats"
	"github.com/turumba/realtime/internal/sio"
)

// Namespace is the Socket.IO namespace of the service.
const Namespace = "/agents"

// Client is one Socket.IO connection of the load. After Connect and Join it
// reads on a single goroutine, answering pings, until Close.
type Client struct {
	N       int // its number in the layout
	Account int
	Conv    int

	rec  *Recorder
	conn net.Conn
	fr   sio.FrameReader
	wbuf []byte
	mask [4]byte

	mu       sync.Mutex // the read loop adds, the runner counts between phases
	acctSeen loadstats.SeqSet
	convSeen loadstats.SeqSet

	done    chan struct{}
	closing atomic.Bool
	err     error // why the read loop ended; read after done
}

// ConnectOptions tune a connection.
type ConnectOptions struct {
	Addr       string // host:port of the server
	ReadBuffer int    // bytes; frames up to this size are read without copying
	Timeout    time.Duration
}

// Connect opens the websocket, reads the Engine.IO handshake and connects
// to the namespace with token; a refused token is an error carrying the
// server's message.
func Connect(ctx context.Context, d *Dialer, o ConnectOptions, n int, l Layout, rec *Recorder, token string) (*Client, error) {
	c := &Client{N: n, Account: l.Account(n), Conv: l.Conversation(n), rec: rec, wbuf: make([]byte, 0, 256)}
	_, _ = rand.Read(c.mask[:])
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	if err := c.handshake(ctx, o, token); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) handshake(ctx context.Context, o ConnectOptions, token string) error {
	deadline := time.Now().Add(o.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.conn.SetDeadline(deadline)
	br, err := sio.ClientHandshake(c.conn, o.Addr, "/socket.io/?EIO=4&transport=websocket", nil, o.ReadBuffer)
	if err != nil {
		return err
	}
	c.fr = sio.FrameReader{R: br}
	msg, err := c.nextText()
	if err != nil {
		return fmt.Errorf("engine.io open: %w", err)
	}
	if len(msg) == 0 || msg[0] != sio.EIOOpen {
		return fmt.Errorf("engine.io open: unexpected %.80q", msg)
	}
	auth := append([]byte(`{"token":`), sio.AppendString(nil, token)...)
	auth = append(auth, '}')
	if err := c.send(sio.AppendPacket(nil, sio.Connect, Namespace, -1, auth)); err != nil {
		return err
	}
	for {
		msg, err := c.nextText()
		if err != nil {
			return fmt.Errorf("socket.io connect: %w", err)
		}
		p, err := sio.ParsePacket(msg)
		if err != nil || string(p.Nsp) != Namespace {
			continue // pings are answered in nextText; other namespaces do not concern us
		}
		switch p.Type {
		case sio.Connect:
			return nil
		case sio.ConnectError:
			m, _ := sio.Field(p.Data, "message")
			return fmt.Errorf("%w: %s", ErrRefused, m)
		}
	}
}

// ErrRefused is a connect error the server answered (bad token, ...).
var ErrRefused = errors.New("connection refused by the server")

// Join subscribes to the client's account and joins its conversation, and
// waits for both acknowledgements.
func (c *Client) Join(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.conn.SetDeadline(deadline)
	acct := AccountID(c.Account)
	sub := append([]byte(`{"account_id":`), sio.AppendString(nil, acct)...)
	sub = append(sub, '}')
	join := append([]byte(`{"conversation_id":`), sio.AppendString(nil, ConversationID(c.Account, c.Conv))...)
	join = append(join, `,"account_id":`...)
	join = append(sio.AppendString(join, acct), '}')
	if err := c.send(sio.AppendEvent(nil, Namespace, 1, "account:subscribe", sub)); err != nil {
		return err
	}
	if err := c.send(sio.AppendEvent(nil, Namespace, 2, "conversation:join", join)); err != nil {
		return err
	}
	for acked := 0; acked < 2; {
		msg, err := c.nextText()
		if err != nil {
			return fmt.Errorf("waiting for join acks: %w", err)
		}
		p, err := sio.ParsePacket(msg)
		if err != nil || string(p.Nsp) != Namespace {
			continue
		}
		switch p.Type {
		case sio.Ack:
			if !bytes.Contains(p.Data, []byte(`"ok":true`)) {
				return fmt.Errorf("ack %d refused: %.200s", p.ID, p.Data)
			}
			acked++
		case sio.Event:
			c.rec.Other.Add(1) // presence of agents connecting meanwhile
		case sio.Disconnect:
			return errors.New("disconnected by the server while joining")
		}
	}
	_ = c.conn.SetDeadline(time.Time{})
	return nil
}

// Start runs the read loop on its own goroutine.
func (c *Client) Start() {
	c.done = make(chan struct{})
	go c.loop()
}

// Close closes the connection and waits for the read loop.
func (c *Client) Close() {
	c.closing.Store(true)
	_ = c.conn.Close()
	if c.done != nil {
		<-c.done
	}
}

// Err is why the read loop ended (after Close: nil if it ended by Close).
func (c *Client) Err() error {
	if c.closing.Load() {
		return nil
	}
	return c.err
}

// Done is closed when the read loop ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Missing compares what the client received on its account and conversation
// streams with what was published there: the deliveries it lacks, and those
// it has although their publish was not counted (nil skips a stream).
func (c *Client) Missing(acctSent, convSent *loadstats.SeqSet) (missing, extra uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if acctSent != nil {
		missing += c.acctSeen.MissingOf(acctSent)
		extra += c.acctSeen.ExtraOf(acctSent)
	}
	if convSent != nil {
		missing += c.convSeen.MissingOf(convSent)
		extra += c.convSeen.ExtraOf(convSent)
	}
	return missing, extra
}

func (c *Client) loop() {
	defer close(c.done)
	for {
		op, p, err := c.fr.Next()
		if err != nil {
			c.finish(err)
			return
		}
		c.rec.Received.Add(1)
		switch op {
		case sio.OpText:
			if err := c.handle(p); err != nil {
				c.finish(err)
				return
			}
		case sio.OpPing:
			if err := c.sendFrame(sio.OpPong, p); err != nil {
				c.finish(err)
				return
			}
		case sio.OpClose:
			_ = c.sendFrame(sio.OpClose, nil)
			c.finish(errors.New("closed by the server"))
			return
		}
	}
}

func (c *Client) finish(err error) {
	c.err = err
	if !c.closing.Load() {
		c.rec.disconnected(c.N, err)
	}
	_ = c.conn.Close()
}

// handle processes one Engine.IO message on the read loop.
func (c *Client) handle(msg []byte) error {
	if len(msg) == 0 {
		return nil
	}
	switch msg[0] {
	case sio.EIOPing:
		return c.send([]byte{sio.EIOPong})
	case sio.EIOClose:
		return errors.New("engine.io close from the server")
	case sio.EIOMessage:
	default:
		return nil
	}
	now := time.Now().UnixNano()
	p, err := sio.ParsePacket(msg)
	if err != nil {
		c.rec.BadEvents.Add(1)
		return nil
	}
	switch p.Type {
	case sio.Disconnect:
		return errors.New("socket.io disconnect from the server")
	case sio.Event:
	default:
		return nil
	}
	name, args, err := sio.SplitEvent(p.Data, true)
	if err != nil {
		c.rec.BadEvents.Add(1)
		return nil
	}
	var set *loadstats.SeqSet
	var seqKey, tsKey string
	switch string(name) {
	case EventAccount:
		set, seqKey, tsKey = &c.acctSeen, "contact_identifier", "created_at"
	case EventConversation:
		set, seqKey, tsKey = &c.convSeen, "message_id", "created_at"
	case EventUpdated: // the account-wide echo of a message: timed, not numbered
		tsKey = "last_message_at"
	default:
		c.rec.Other.Add(1)
		return nil
	}
	obj, err := sio.FirstValue(args)
	if err != nil {
		c.rec.BadEvents.Add(1)
		return nil
	}
	raw, _ := sio.Field(obj, tsKey)
	sent, ok := sio.TimeNanos(raw)
	if !ok {
		c.rec.BadEvents.Add(1)
		return nil
	}
	ph := c.rec.phaseFor(sent)
	if ph == nil {
		c.rec.Stale.Add(1)
		return nil
	}
	if set != nil {
		raw, _ = sio.Field(obj, seqKey)
		seq, ok := sio.Uint(raw)
		if !ok || seq == 0 || seq > loadstats.MaxSeq {
			c.rec.BadEvents.Add(1)
			return nil
		}
		ph.Latency.Record(c.N, time.Duration(now-sent))
		c.mu.Lock()
		dup, _ := set.Add(seq)
		c.mu.Unlock()
		if dup {
			ph.Dups.Add(1)
			return nil
		}
	} else {
		ph.Latency.Record(c.N, time.Duration(now-sent))
	}
	ph.Distinct.Add(1)
	return nil
}

// nextText returns the next text message, answering pings on the way.
func (c *Client) nextText() ([]byte, error) {
	for {
		op, p, err := c.fr.Next()
		if err != nil {
			return nil, err
		}
		switch op {
		case sio.OpText:
			if len(p) == 1 && p[0] == sio.EIOPing {
				if err := c.send([]byte{sio.EIOPong}); err != nil {
					return nil, err
				}
				continue
			}
			return p, nil
		case sio.OpPing:
			if err := c.sendFrame(sio.OpPong, p); err != nil {
				return nil, err
			}
		case sio.OpClose:
			return nil, errors.New("closed by the server")
		}
	}
}

func (c *Client) send(msg []byte) error { return c.sendFrame(sio.OpText, msg) }

func (c *Client) sendFrame(op byte, payload []byte) error {
	c.wbuf = sio.AppendFrame(c.wbuf[:0], op, payload, &c.mask)
	_, err := c.conn.Write(c.wbuf)
	return err
}

// The client events the load measures, and the routing keys producing them.
const (
	EventAccount      = "conversation:new"     // conversation.created -> account room
	EventConversation = "conversation:message" // conversation.message.created -> conversation room
	EventUpdated      = "conversation:updated" // conversation.message.created -> account room

	KeyAccount      = "conversation.created"
	KeyConversation = "conversation.message.created"
)

// AppendAccountEvent appends the body of a conversation.created event for
// account a, numbered seq on the account's stream and stamped at.
func AppendAccountEvent(dst []byte, a, c int, seq uint64, at time.Time) []byte {
	dst = appendIDs(dst, a, c)
	dst = append(dst, `,"channel_id":"load","status":"open","contact_identifier":"`...)
	return appendSeqTime(dst, seq, at)
}

// AppendMessageEvent appends the body of a conversation.message.created
// event in conversation c of account a, numbered seq on the conversation's
// stream and stamped at.
func AppendMessageEvent(dst []byte, a, c int, seq uint64, at time.Time) []byte {
	dst = appendIDs(dst, a, c)
	dst = append(dst, `,"sender_type":"contact","is_private":false,"message_body":"Hello, I need help with my order.","message_id":"`...)
	return appendSeqTime(dst, seq, at)
}

// appendIDs opens an event with its account and conversation ids.
func appendIDs(dst []byte, a, c int) []byte {
	dst = append(dst, `{"account_id":"acct-`...)
	dst = strconv.AppendInt(dst, int64(a), 10)
	dst = append(dst, `","conversation_id":"conv-`...)
	dst = strconv.AppendInt(dst, int64(a), 10)
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(c), 10)
	return append(dst, '"')
}

// appendSeqTime closes an event: the sequence number (inside the string the
// caller opened) and the send timestamp.
func appendSeqTime(dst []byte, seq uint64, at time.Time) []byte {
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `","created_at":`...)
	dst = sio.AppendTime(dst, at)
	return append(dst, '}')
}
