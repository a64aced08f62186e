package realtime

// This file is the only one that speaks the Socket.IO library's untyped
// `...any` API; everything else in the package works with typed values.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime/internal/fastpath"
)

// socketServer wraps the Socket.IO server and the /agents namespace.
type socketServer struct {
	h        *Hub
	srv      *socket.Server
	nsp      socket.Namespace
	fast     *fastpath.Builder
	fanout   *fastpath.Constructor
	http     http.Handler
	isClosed atomic.Bool
}

func newSocketServer(h *Hub) *socketServer {
	opts := socket.DefaultServerOptions()
	opts.SetServeClient(false)
	// The largest message a client may send, over polling or websocket.
	maxMessage := int64(h.cfg.maxPayloadBytes) + 1024
	opts.SetMaxHttpBufferSize(maxMessage)
	opts.SetCors(&types.Cors{Origin: corsOrigin(h.cfg.corsOrigins), Credentials: true})
	opts.SetAllowRequest(func(ctx *types.HttpContext) error {
		// CORS does not cover websockets, so the origin is checked here too.
		if o := ctx.Headers().Peek("Origin"); o != "" && !originAllowed(h.cfg.corsOrigins, o) {
			return errors.New("origin not allowed")
		}
		return nil
	})
	if w := h.cfg.recoveryWindow; w > 0 {
		rec := socket.DefaultConnectionStateRecovery()
		rec.SetMaxDisconnectionDuration(w.Milliseconds())
		// A recovered session runs the auth middleware again: an expired
		// token must not come back through recovery.
		rec.SetSkipMiddlewares(false)
		opts.SetConnectionStateRecovery(rec)
	}
	// The hot path: our websocket transport and every broadcast through
	// the fast fanout (internal/fastpath); polling stays the library's.
	fast := &fastpath.Builder{
		Limits: fastpath.Limits{Queue: h.cfg.writeQueue, WriteTimeout: h.cfg.writeTimeout, ReadLimit: maxMessage},
		Hooks:  fastpath.Hooks{SlowClient: h.onSlowClient},
	}
	opts.SetTransports(types.NewSet[transports.TransportCtor](engine.Polling, fast))
	wsDeliveries := h.metrics.deliveries.WithLabelValues("websocket")
	libDeliveries := h.metrics.deliveries.WithLabelValues("library")
	fanout := &fastpath.Constructor{Inner: h.cfg.adapter, Delivered: func(c fastpath.Counts) {
		if c.Websocket > 0 {
			wsDeliveries.Add(float64(c.Websocket))
		}
		if c.Library > 0 {
			libDeliveries.Add(float64(c.Library))
		}
	}}
	opts.SetAdapter(fanout)
	s := &socketServer{h: h, srv: socket.NewServer(nil, opts), fast: fast, fanout: fanout}
	s.http = s.srv.ServeHandler(nil)
	s.nsp = s.srv.Of(Namespace, nil)
	s.nsp.Use(s.authenticate)
	_ = s.nsp.On("connection", func(args ...any) {
		if sock, ok := args[0].(*socket.Socket); ok {
			s.onConnection(sock)
		}
	})
	return s
}

// handler serves Socket.IO. The library checks websocket origins against the
// CORS list only, so an Origin naming the host the request was sent to (a
// page served by this service: the dev console, an embedding app) is
// dropped first: same-origin needs no CORS.
func (s *socketServer) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header = keptHeaders(r.Header)
		if o := r.Header.Get("Origin"); o != "" && sameOrigin(o, r.Host) {
			r.Header.Del("Origin")
		}
		s.http.ServeHTTP(fastpath.ForUpgrade(w, r), r)
	})
}

// keptHeaders drops every request header but those the engine, the
// websocket upgrade, CORS and the Hub read (keptHeader). The library keeps
// a socket's handshake request for the socket's life, with its headers in
// three maps (the request's, its own and the handshake's): cookies of the
// inbox's other services, client hints and languages would cost kilobytes
// per browser connection and keep other services' credentials in this
// one's memory. The map is sized by what it keeps, since it lives as long
// as the socket.
func keptHeaders(h http.Header) http.Header {
	n := 0
	for k := range h {
		if keptHeader[k] {
			n++
		}
	}
	kept := make(http.Header, n)
	for k, v := range h {
		if keptHeader[k] {
			kept[k] = v
		}
	}
	return kept
}

// keptHeader holds the canonical names (http.CanonicalHeaderKey) of the
// headers keptHeaders keeps.
var keptHeader = map[string]bool{
	"Upgrade": true, "Connection": true, "Sec-Websocket-Key": true, "Sec-Websocket-Version": true,
	"Sec-Websocket-Extensions": true, "Sec-Websocket-Protocol": true,
	"Origin": true, "Access-Control-Request-Method": true, "Access-Control-Request-Headers": true,
	"Content-Type": true, "Content-Length": true, "Accept-Encoding": true, "User-Agent": true,
	"Authorization": true, "X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Forwarded-Host": true,
	"Forwarded": true, "X-Real-Ip": true,
}

// sameOrigin reports whether origin names host (host[:port]).
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// compact makes the engine's map of clients forget the ones that closed.
// It is the library's copy of sync.Map, and the engine removes a client
// with CompareAndDelete, which only empties the entry: the key stays until
// the map promotes its dirty part, which a map that sees few lookups of
// missing keys never does. Under churn that kept about 110 bytes per
// connection ever opened (realtime-load soak). Range promotes it; the next
// store then drops the empty entries.
func (s *socketServer) compact() {
	s.srv.Engine().Clients().Range(func(string, engine.Socket) bool { return true })
}

func (s *socketServer) close() {
	if s.isClosed.CompareAndSwap(false, true) {
		s.srv.Close(nil)
		s.fast.Close()
	}
}

// broadcast hands one emit to the adapter: every socket in any of the rooms,
// once, except those in em.Except.
func (s *socketServer) broadcast(em Emit) error {
	rooms := make([]socket.Room, len(em.Rooms))
	for i, r := range em.Rooms {
		rooms[i] = socket.Room(r)
	}
	op := s.nsp.To(rooms...)
	if em.Except != "" {
		op = op.Except(socket.Room(em.Except))
	}
	return op.Emit(em.Event, em.Payload)
}

// async returns the adapter's AsyncBroadcaster, when it has one.
func (s *socketServer) async() (fastpath.AsyncBroadcaster, bool) {
	return fastpath.AsyncOf(s.nsp.Adapter())
}

// broadcastAsync is broadcast through ab: done gets the outcome, nil once
// the adapter has taken the broadcast for every instance (the Redis
// streams adapter: once Redis has it).
func (s *socketServer) broadcastAsync(ab fastpath.AsyncBroadcaster, em Emit, done func(error)) {
	rooms := types.NewSet[socket.Room]()
	for _, r := range em.Rooms {
		rooms.Add(socket.Room(r))
	}
	except := types.NewSet[socket.Room]()
	if em.Except != "" {
		except.Add(socket.Room(em.Except))
	}
	// The packet and options the library's BroadcastOperator.Emit builds.
	p := &parser.Packet{Type: parser.EVENT, Data: []any{em.Event, em.Payload}}
	ab.BroadcastAsync(p, &socket.BroadcastOptions{Rooms: rooms, Except: except, Flags: &socket.BroadcastFlags{}}, done)
}

// authenticate is the namespace middleware: it verifies the handshake token
// and leaves the identity in the socket's data.
func (s *socketServer) authenticate(sock *socket.Socket, next func(*socket.ExtendedError)) {
	h := s.h
	if h.closing.Load() {
		next(connectError(errShuttingDown))
		return
	}
	token := handshakeToken(sock)
	forgetToken(sock)
	if token == "" {
		h.metrics.authFailures.WithLabelValues(codeAuthRequired).Inc()
		next(connectError(errAuthRequired))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.handshakeTimeout)
	defer cancel()
	id, err := h.verifier.Verify(ctx, token)
	if err != nil {
		ce := authError(err)
		h.metrics.authFailures.WithLabelValues(ce.Code).Inc()
		h.log.Info("connection refused", "code", ce.Code, "reason", err.Error(), "address", sock.Handshake().Address)
		next(connectError(ce))
		return
	}
	sock.SetData(&id)
	next(nil)
}

func (s *socketServer) onConnection(sock *socket.Socket) {
	id, ok := sock.Data().(*Identity)
	if !ok || id == nil {
		sock.Disconnect(true)
		return
	}
	c := newConn(s.h, &sockConn{sock: sock}, *id)
	// One listener for every client event (a listener per event costs each
	// connection a kilobyte or two); events outside the contract are ignored.
	sock.OnAny(func(args ...any) {
		name, _ := firstString(args)
		ev, ok := clientEventByName[name]
		if !ok {
			return
		}
		payload, ack := splitArgs(args[1:])
		reply := c.dispatch(ev, payload)
		if ack != nil {
			ack([]any{reply}, nil)
		}
	})
	_ = sock.On("disconnecting", func(args ...any) {
		reason, _ := firstString(args)
		c.onDisconnect(reason)
	})
	c.start(sock.Recovered())
}

// sockConn is the Socket.IO side of one connection.
type sockConn struct{ sock *socket.Socket }

func (sc *sockConn) id() string               { return string(sc.sock.Id()) }
func (sc *sockConn) address() string          { return sc.sock.Handshake().Address }
func (sc *sockConn) join(room string)         { sc.sock.Join(socket.Room(room)) }
func (sc *sockConn) leave(room string)        { sc.sock.Leave(socket.Room(room)) }
func (sc *sockConn) inRoom(room string) bool  { return sc.sock.Rooms().Has(socket.Room(room)) }
func (sc *sockConn) emit(event string, v any) { _ = sc.sock.Emit(event, v) }
func (sc *sockConn) disconnect()              { sc.sock.Disconnect(false) } // a namespace disconnect: the client does not retry with the same token
func (sc *sockConn) connected() bool          { return sc.sock.Connected() }
func (sc *sockConn) closeTransport()          { sc.sock.Conn().Close(false) }
func (sc *sockConn) transport() string        { return sc.sock.Conn().Transport().Name() }
func (sc *sockConn) transportClosed() bool    { return sc.sock.Conn().ReadyState() == "closed" }
func (sc *sockConn) setIdentity(id *Identity) { sc.sock.SetData(id) }
func (sc *sockConn) rooms() []string {
	keys := sc.sock.Rooms().Keys()
	out := make([]string, 0, len(keys))
	for _, r := range keys {
		out = append(out, string(r))
	}
	return out
}

// splitArgs separates a client event's payload from its acknowledgement
// callback, which the library appends as the last argument.
func splitArgs(args []any) (json.RawMessage, func([]any, error)) {
	var ack func([]any, error)
	if n := len(args); n > 0 {
		if fn, ok := args[n-1].(socket.Ack); ok {
			ack = fn
			args = args[:n-1]
		}
	}
	if len(args) == 0 {
		return nil, ack
	}
	raw, err := json.Marshal(args[0])
	if err != nil {
		return nil, ack
	}
	return raw, ack
}

func firstString(args []any) (string, bool) {
	if len(args) == 0 {
		return "", false
	}
	s, ok := args[0].(string)
	return s, ok
}

// handshakeToken reads the token from handshake.auth.token or the
// Authorization: Bearer header.
func handshakeToken(sock *socket.Socket) string {
	if auth := sock.Handshake().Auth; auth != nil {
		if t, ok := auth["token"].(string); ok && t != "" {
			return t
		}
	}
	if v := sock.Request().Headers().Peek("Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// forgetToken drops the bearer token from what the library keeps of the
// handshake once it has been read: the socket's Identity is what the Hub
// uses from then on, and a token kept for the socket's life is a
// credential in memory (and in any dump of the handshake) for nothing.
// The other auth fields (pid and offset for recovery) stay.
func forgetToken(sock *socket.Socket) {
	hs := sock.Handshake()
	delete(hs.Auth, "token")
	delete(hs.Headers, "Authorization")
	sock.Request().Headers().Remove("Authorization")
}

func connectError(ce *clientError) *socket.ExtendedError {
	return socket.NewExtendedError(ce.Message, map[string]any{"code": ce.Code})
}

func corsOrigin(origins []string) any {
	for _, o := range origins {
		if o == "*" {
			return true
		}
	}
	return origins
}

func originAllowed(origins []string, origin string) bool {
	for _, o := range origins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}
