// Package baseline is a minimal Socket.IO relay: just enough Engine.IO v4 and
// Socket.IO v5 over websockets (no polling, no upgrades, no recovery) to
// serve the load tool's clients the way the service does, measured the same
// way. It is the practical limit of the machine the load runs on: each
// broadcast is encoded once as one complete websocket frame, rooms hold
// socket pointers, and each socket has one writer goroutine that sends
// everything pending with one writev.
//
// It is a measuring reference, not a product: it keeps no presence, relays no
// typing, and its dev endpoints mint and accept tokens for anyone.
package baseline

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turumba/realtime/internal/sio"
)

// Namespace is the only Socket.IO namespace served.
const Namespace = "/agents"

// Options configure the relay; the zero value is usable.
type Options struct {
	// Verifier checks handshake tokens; nil means HS256 with a random secret
	// (the one GET /dev/token signs with).
	Verifier Verifier
	// QueueLimit bounds the frames waiting for one socket's writer; a socket
	// that falls further behind is disconnected (default 8192).
	QueueLimit int
	// WriteTimeout bounds one batched write (default 10 s).
	WriteTimeout time.Duration
	// PingInterval and PingTimeout are Engine.IO's heartbeat (25 s, 20 s).
	PingInterval, PingTimeout time.Duration
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// Server is the relay. Serve its Handler and call Run for the heartbeat.
type Server struct {
	opts   Options
	verify Verifier
	dev    *HS256 // signs /dev/token; nil when another verifier is set
	log    *slog.Logger

	mu      sync.RWMutex
	rooms   map[string]map[*socket]struct{}
	sockets map[*socket]struct{}
	gen     atomic.Uint64 // broadcast generation, to deliver once across rooms

	ids      atomic.Uint64
	Connects atomic.Uint64 // namespace connects accepted
	Refused  atomic.Uint64 // namespace connects refused
	CutOff   atomic.Uint64 // sockets disconnected for falling behind
	Events   atomic.Uint64 // events routed
}

// New returns a relay.
func New(opts Options) *Server {
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = 8192
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 25 * time.Second
	}
	if opts.PingTimeout <= 0 {
		opts.PingTimeout = 20 * time.Second
	}
	s := &Server{opts: opts, verify: opts.Verifier, log: opts.Logger,
		rooms: map[string]map[*socket]struct{}{}, sockets: map[*socket]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.verify == nil {
		s.dev = NewHS256(nil)
		s.verify = s.dev
	}
	return s
}

// Handler serves /socket.io/ (websocket only), GET /health, and, compatible
// with the service's dev mode, GET /dev/token and POST /dev/events.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/socket.io/", s.serveSocket)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "healthy"})
	})
	mux.HandleFunc("GET /metrics", serveMetrics)
	mux.HandleFunc("GET /dev/token", s.serveToken)
	mux.HandleFunc("POST /dev/events", s.serveEvents)
	return mux
}

// Run sends heartbeats and drops sockets whose pongs stop, until ctx ends;
// then it closes every socket.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.PingInterval)
	defer t.Stop()
	ping := sio.AppendFrame(nil, sio.OpText, []byte{sio.EIOPing}, nil)
	for {
		select {
		case <-ctx.Done():
			s.closeAll()
			return
		case <-t.C:
		}
		deadline := time.Now().Add(-(s.opts.PingInterval + s.opts.PingTimeout)).UnixNano()
		for _, k := range s.all() {
			if k.lastPong.Load() < deadline {
				k.close()
				continue
			}
			k.enqueue(ping)
		}
	}
}

func (s *Server) closeAll() {
	for _, k := range s.all() {
		k.close()
	}
}

// all returns the sockets connected now.
func (s *Server) all() []*socket {
	s.mu.RLock()
	defer s.mu.RUnlock()
	all := make([]*socket, 0, len(s.sockets))
	for k := range s.sockets {
		all = append(all, k)
	}
	return all
}

// Broadcast sends one event to every socket in any of rooms, once. The packet
// and its frame are encoded once; every recipient's queue gets the same bytes.
func (s *Server) Broadcast(rooms []string, event string, payload []byte) {
	msg := sio.AppendEvent(make([]byte, 0, len(payload)+len(event)+32), Namespace, -1, event, payload)
	frame := sio.AppendFrame(make([]byte, 0, len(msg)+sio.MaxFrameHeader), sio.OpText, msg, nil)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(rooms) == 1 {
		for k := range s.rooms[rooms[0]] {
			k.enqueue(frame)
		}
		return
	}
	gen := s.gen.Add(1)
	for _, r := range rooms {
		for k := range s.rooms[r] {
			if k.mark.Swap(gen) != gen {
				k.enqueue(frame)
			}
		}
	}
}

func (s *Server) join(k *socket, room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.dead {
		return
	}
	members := s.rooms[room]
	if members == nil {
		members = map[*socket]struct{}{}
		s.rooms[room] = members
	}
	if _, ok := members[k]; !ok {
		members[k] = struct{}{}
		k.rooms = append(k.rooms, room)
	}
}

func (s *Server) leaveAll(k *socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range k.rooms {
		if members := s.rooms[r]; members != nil {
			delete(members, k)
			if len(members) == 0 {
				delete(s.rooms, r)
			}
		}
	}
	k.rooms = nil
}

func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("transport") != "websocket" || q.Get("EIO") != "4" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 0, "message": "Transport unknown"})
		return
	}
	conn, br, err := sio.Accept(w, r)
	if err != nil {
		return
	}
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(conn, 1024) // the hijacked 4 KiB buffer would sit idle
	}
	k := &socket{s: s, conn: conn, wake: make(chan struct{}, 1), id: s.newID()}
	k.lastPong.Store(time.Now().UnixNano())
	s.mu.Lock()
	s.sockets[k] = struct{}{}
	s.mu.Unlock()
	go k.writeLoop()
	open := fmt.Sprintf(`0{"sid":%q,"upgrades":[],"pingInterval":%d,"pingTimeout":%d,"maxPayload":1000000}`,
		k.id, s.opts.PingInterval.Milliseconds(), s.opts.PingTimeout.Milliseconds())
	k.enqueue(sio.AppendFrame(nil, sio.OpText, []byte(open), nil))
	// Read on a fresh goroutine and return, so that net/http lets go of the
	// request and its buffers instead of keeping them for the connection's life.
	go k.readLoop(br)
}

func (s *Server) newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(s.ids.Add(1), 36) + "-" + fmt.Sprintf("%x", b)
}

// socket is one websocket connection.
type socket struct {
	s    *Server
	conn net.Conn
	id   string

	// Owned by the read loop.
	ident     *Identity
	connected bool
	lastPong  atomic.Int64

	mark atomic.Uint64 // last broadcast generation queued, see Broadcast

	// Guarded by s.mu.
	rooms []string
	dead  bool

	// The write queue.
	mu     sync.Mutex
	queue  [][]byte
	spare  [][]byte
	closed bool
	wake   chan struct{}
}

// enqueue hands a complete frame to the writer; a socket whose queue is full
// is cut off rather than allowed to hold anything up.
func (k *socket) enqueue(frame []byte) {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	if len(k.queue) >= k.s.opts.QueueLimit {
		k.mu.Unlock()
		k.s.CutOff.Add(1)
		k.close()
		return
	}
	k.queue = append(k.queue, frame)
	if len(k.queue) == 1 { // the writer is idle or has taken the previous batch
		select {
		case k.wake <- struct{}{}:
		default:
		}
	}
	k.mu.Unlock()
}

func (k *socket) writeLoop() {
	for range k.wake {
		k.mu.Lock()
		batch := k.queue
		k.queue = k.spare[:0]
		closed := k.closed
		k.mu.Unlock()
		if closed {
			return
		}
		if len(batch) == 0 {
			continue
		}
		_ = k.conn.SetWriteDeadline(time.Now().Add(k.s.opts.WriteTimeout))
		bufs := net.Buffers(batch)
		_, err := bufs.WriteTo(k.conn) // one writev for the whole batch
		clear(batch)
		k.spare = batch[:0]
		if err != nil {
			k.close()
			return
		}
	}
}

// close is idempotent and safe from any goroutine: the read loop notices the
// closed connection and cleans up the rooms.
func (k *socket) close() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.closed = true
	k.queue = nil
	close(k.wake)
	k.mu.Unlock()
	_ = k.conn.Close()
}

func (k *socket) readLoop(br *bufio.Reader) {
	s := k.s
	defer func() {
		k.close()
		s.mu.Lock()
		k.dead = true
		delete(s.sockets, k)
		s.mu.Unlock()
		s.leaveAll(k)
	}()
	fr := sio.FrameReader{R: br, Max: 1 << 20}
	for {
		op, p, err := fr.Next()
		if err != nil {
			return
		}
		switch op {
		case sio.OpText:
			if !k.handle(p) {
				return
			}
		case sio.OpPing:
			k.enqueue(sio.AppendFrame(nil, sio.OpPong, p, nil))
		case sio.OpClose:
			return
		}
	}
}

// handle processes one Engine.IO message; false ends the connection.
func (k *socket) handle(msg []byte) bool {
	if len(msg) == 0 {
		return true
	}
	switch msg[0] {
	case sio.EIOPong:
		k.lastPong.Store(time.Now().UnixNano())
		return true
	case sio.EIOClose:
		return false
	case sio.EIOMessage:
	default:
		return true
	}
	p, err := sio.ParsePacket(msg)
	if err != nil {
		return false
	}
	nsp := string(p.Nsp)
	switch p.Type {
	case sio.Connect:
		k.connect(nsp, p.Data)
	case sio.Disconnect:
		if nsp == Namespace {
			k.connected = false
			k.s.leaveAll(k)
		}
	case sio.Event:
		if nsp == Namespace && k.connected {
			k.event(p.ID, p.Data)
		}
	}
	return true
}

func (k *socket) connect(nsp string, data []byte) {
	fail := func(code, message string) {
		k.s.Refused.Add(1)
		body, _ := json.Marshal(map[string]any{"message": message, "data": map[string]string{"code": code}})
		k.send(sio.AppendPacket(nil, sio.ConnectError, nsp, -1, body))
	}
	if nsp != Namespace {
		fail("invalid_namespace", "Invalid namespace")
		return
	}
	var auth struct {
		Token string `json:"token"`
	}
	if len(data) > 0 {
		_ = json.Unmarshal(data, &auth)
	}
	if auth.Token == "" {
		fail("auth_required", "Authentication required")
		return
	}
	id, err := k.s.verify.Verify(auth.Token)
	if err != nil {
		fail("invalid_token", "Invalid token")
		return
	}
	k.ident, k.connected = &id, true
	k.s.Connects.Add(1)
	k.s.join(k, "user:"+id.Subject)
	k.send(sio.AppendPacket(nil, sio.Connect, nsp, -1, []byte(`{"sid":"`+k.id+`"}`)))
}

// event handles account:subscribe and conversation:join, checking the
// token's accounts; anything else is refused.
func (k *socket) event(ackID int64, data []byte) {
	var args []json.RawMessage
	reply := func(ack string) {
		if ackID >= 0 {
			k.send(sio.AppendPacket(nil, sio.Ack, Namespace, ackID, []byte("["+ack+"]")))
		}
	}
	if json.Unmarshal(data, &args) != nil || len(args) < 2 {
		reply(`{"ok":false,"error":"invalid_payload"}`)
		return
	}
	var name string
	var body struct {
		AccountID      string `json:"account_id"`
		ConversationID string `json:"conversation_id"`
	}
	if json.Unmarshal(args[0], &name) != nil || json.Unmarshal(args[1], &body) != nil {
		reply(`{"ok":false,"error":"invalid_payload"}`)
		return
	}
	account := body.AccountID
	if account == "" && len(k.ident.Accounts) == 1 {
		account = k.ident.Accounts[0]
	}
	allowed := false
	for _, a := range k.ident.Accounts {
		allowed = allowed || (a == account && validID(a))
	}
	switch {
	case name != "account:subscribe" && name != "conversation:join":
		reply(`{"ok":false,"error":"invalid_payload","message":"unsupported event"}`)
	case !allowed:
		reply(`{"ok":false,"error":"forbidden"}`)
	case name == "account:subscribe":
		k.s.join(k, "account:"+account)
		reply(`{"ok":true,"account_id":` + strconv.Quote(account) + `}`)
	case !validID(body.ConversationID):
		reply(`{"ok":false,"error":"invalid_payload"}`)
	default:
		k.s.join(k, "conv:"+account+":"+body.ConversationID)
		reply(`{"ok":true,"conversation_id":` + strconv.Quote(body.ConversationID) + `}`)
	}
}

func (k *socket) send(msg []byte) { k.enqueue(sio.AppendFrame(nil, sio.OpText, msg, nil)) }

func validID(s string) bool {
	return s != "" && len(s) <= 128 && !strings.ContainsAny(s, ":\x00\"\\")
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if s.dev == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"ok": false, "error": "dev tokens are off: a verifier was configured"})
		return
	}
	q := r.URL.Query()
	sub := q.Get("sub")
	if sub == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "sub is required"})
		return
	}
	ttl := time.Hour
	if v := q.Get("ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": "bad ttl"})
			return
		}
		ttl = d
	}
	accounts := splitAccounts(q.Get("accounts"))
	tok, err := s.dev.Mint(sub, accounts, ttl)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "sub": sub, "accounts": accounts})
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	var req struct {
		RoutingKey string          `json:"routing_key"`
		Event      json.RawMessage `json:"event"`
	}
	if json.Unmarshal(body, &req) != nil || req.RoutingKey == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": `body must be {"routing_key": ..., "event": {...}}`})
		return
	}
	if err := s.Publish(req.RoutingKey, req.Event); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// ErrInvalidEvent marks an event the relay cannot route.
var ErrInvalidEvent = errors.New("baseline: invalid event")

// serveMetrics exposes the runtime figures the load tool reads from the
// service's Prometheus endpoint, under the same names.
func serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# TYPE go_goroutines gauge\ngo_goroutines %d\n# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes %d\n"+
		"# TYPE go_memstats_alloc_bytes_total counter\ngo_memstats_alloc_bytes_total %d\n"+
		"# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total %d\n"+
		"# TYPE go_gc_duration_seconds_count counter\ngo_gc_duration_seconds_count %d\n",
		runtime.NumGoroutine(), ms.HeapInuse, ms.TotalAlloc, ms.Mallocs, ms.NumGC)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
