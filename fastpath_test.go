package realtime

// Tests of the hot path (internal/fastpath) through the Hub, with raw
// Socket.IO clients: websocket clients built on internal/sio and polling
// clients on net/http, so that the test sees every frame and decides when
// to read, upgrade or cut the connection.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/turumba/realtime/internal/sio"
)

// fpHub is a Hub served on loopback.
type fpHub struct {
	*Hub
	addr string // host:port
}

func startHub(t *testing.T, opts ...Option) *fpHub {
	t.Helper()
	base := []Option{
		WithTokenVerifier(staticVerifier{}),
		WithLogger(slog.New(slog.DiscardHandler)),
		WithClientRateLimit(RateLimit{PerSecond: 1e6, Burst: 1 << 20}),
	}
	h, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		srv.Close()
	})
	return &fpHub{Hub: h, addr: srv.Listener.Addr().String()}
}

// metricValue sums the samples of a counter, gauge or vector of them.
func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		sum += d.GetCounter().GetValue() + d.GetGauge().GetValue()
	}
	return sum
}

func (h *fpHub) deliveries(t *testing.T) (websocket, library float64) {
	return metricValue(t, h.metrics.deliveries.WithLabelValues("websocket")),
		metricValue(t, h.metrics.deliveries.WithLabelValues("library"))
}

// message publishes conversation.message.created number n of conversation
// conv of account acme, with a body of bodySize bytes.
func (h *fpHub) message(t *testing.T, conv string, n, bodySize int) {
	t.Helper()
	err := h.Publish(context.Background(), "conversation.message.created", map[string]any{
		"account_id": "acme", "conversation_id": conv, "message_id": "m-" + strconv.Itoa(n), "sender_type": "contact",
		"message_body": strings.Repeat("b", bodySize), "is_private": false, "created_at": "2026-11-27T10:00:00Z",
	})
	if err != nil {
		t.Errorf("publish m-%d: %v", n, err)
	}
}

// waitUntil polls cond every millisecond until it holds, for at most 15 s;
// a timeout reports the state of the clients given.
func waitUntil(t *testing.T, what string, cond func() bool, clients ...*sioClient) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var states []string
			for _, c := range clients {
				states = append(states, c.state())
			}
			t.Fatalf("timed out waiting for %s %s", what, strings.Join(states, "; "))
		}
		time.Sleep(time.Millisecond)
	}
}

// received is one packet of namespace /agents as a client saw it.
type received struct {
	name      string          // event name
	arg       json.RawMessage // first argument
	offset    string          // recovery offset: a string after the first argument
	id        string          // the argument's message_id, if any
	transport string          // websocket or polling
	at        time.Time
}

// sioClient is a raw Socket.IO client of /agents over websocket, polling,
// or polling upgraded to websocket. Everything it receives is logged.
type sioClient struct {
	t     *testing.T
	h     *fpHub
	name  string
	token string

	ws   *wsConn   // the websocket, once there is one
	poll *pollConn // the polling connection, if it started with one

	stall  atomic.Bool   // the websocket reader stops after its next message
	resume chan struct{} // closed to let a stalled reader go on

	mu         sync.Mutex
	send       func([]byte) error // one Engine.IO message on the current transport
	sid, pid   string
	connectErr string
	events     []received
	acks       map[int64][]json.RawMessage
	ended      string // how the connection ended: "close frame" (with its code if any), "engine.io close", or the read error
	nextID     int64
}

func (h *fpHub) newClient(t *testing.T, user string) *sioClient {
	return &sioClient{t: t, h: h, name: user, token: user + "|acme", resume: make(chan struct{}), acks: map[int64][]json.RawMessage{}}
}

// handle logs one Engine.IO message that came over transport; reply
// answers on that transport.
func (c *sioClient) handle(msg []byte, transport string, reply func([]byte) error) {
	if len(msg) == 0 {
		return
	}
	switch msg[0] {
	case sio.EIOPing:
		_ = reply([]byte{sio.EIOPong})
		return
	case sio.EIOClose:
		c.end("engine.io close")
		return
	case sio.EIOMessage:
	default:
		return
	}
	p, err := sio.ParsePacket(msg)
	if err != nil || string(p.Nsp) != Namespace {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch p.Type {
	case sio.Connect:
		var v struct{ Sid, Pid string }
		_ = json.Unmarshal(p.Data, &v)
		c.sid, c.pid = v.Sid, v.Pid
	case sio.ConnectError:
		c.connectErr = string(p.Data)
	case sio.Ack:
		c.acks[p.ID] = append(c.acks[p.ID], bytes.Clone(p.Data))
	case sio.Event:
		var arr []json.RawMessage
		if err := json.Unmarshal(p.Data, &arr); err != nil || len(arr) == 0 {
			c.t.Errorf("%s: bad event %q", c.name, p.Data)
			return
		}
		r := received{transport: transport, at: time.Now()}
		_ = json.Unmarshal(arr[0], &r.name)
		if len(arr) > 1 {
			r.arg = arr[1]
			var m struct {
				ID string `json:"message_id"`
			}
			_ = json.Unmarshal(r.arg, &m)
			r.id = m.ID
		}
		if len(arr) > 2 {
			_ = json.Unmarshal(arr[len(arr)-1], &r.offset)
		}
		c.events = append(c.events, r)
	case sio.Disconnect:
		c.events = append(c.events, received{name: "(disconnect)", transport: transport, at: time.Now()})
	}
}

func (c *sioClient) end(how string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended == "" {
		c.ended = how
	}
}

func (c *sioClient) endedHow() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// log returns a copy of the events received so far.
func (c *sioClient) log() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// messages lists the message_id of every conversation:message received.
func (c *sioClient) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, e := range c.events {
		if e.name == "conversation:message" {
			ids = append(ids, e.id)
		}
	}
	return ids
}

func (c *sioClient) has(id string) bool { return slices.Contains(c.messages(), id) }

// state tells, for a failure message, what c has received and how its
// connection ended.
func (c *sioClient) state() string {
	ids := c.messages()
	last := "none"
	if len(ids) > 0 {
		last = ids[len(ids)-1]
	}
	return fmt.Sprintf("%s has %d messages, the last %s; connection ended: %q", c.name, len(ids), last, c.endedHow())
}

// connect sends the CONNECT packet with the token and extra auth fields and
// waits until the Hub has set the connection up (its event handlers are
// registered once it is in h.conns).
func (c *sioClient) connect(extra map[string]any) {
	c.t.Helper()
	c.sendConnect(extra)
	c.waitConnected()
}

// sendConnect sends the CONNECT packet.
func (c *sioClient) sendConnect(extra map[string]any) {
	c.t.Helper()
	auth := map[string]any{"token": c.token}
	for k, v := range extra {
		auth[k] = v
	}
	data, _ := json.Marshal(auth)
	c.mu.Lock()
	send := c.send
	c.mu.Unlock()
	if err := send(sio.AppendPacket(nil, sio.Connect, Namespace, -1, data)); err != nil {
		c.t.Fatal(err)
	}
}

// waitConnected waits for the CONNECT answer and the Hub's set-up.
func (c *sioClient) waitConnected() {
	c.t.Helper()
	waitUntil(c.t, c.name+" connected", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.connectErr != "" {
			c.t.Fatalf("%s: connect error %s", c.name, c.connectErr)
		}
		if c.sid == "" {
			return false
		}
		_, ok := c.h.conns.Load(c.sid)
		return ok
	})
}

// request emits a client event with an acknowledgement id and returns it.
func (c *sioClient) request(event string, payload any) int64 {
	c.t.Helper()
	data, _ := json.Marshal(payload)
	c.mu.Lock()
	c.nextID++
	id, send := c.nextID, c.send
	c.mu.Unlock()
	if err := send(sio.AppendEvent(nil, Namespace, id, event, data)); err != nil {
		c.t.Errorf("%s: %s: %v", c.name, event, err)
	}
	return id
}

// ack waits for the acknowledgement of request id.
func (c *sioClient) ack(id int64) string {
	c.t.Helper()
	var got string
	waitUntil(c.t, fmt.Sprintf("%s: ack %d", c.name, id), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a := c.acks[id]; len(a) > 0 {
			got = string(a[0])
			return true
		}
		return false
	})
	return got
}

// join joins conversation conv of acme.
func (c *sioClient) join(conv string) {
	c.t.Helper()
	got := c.ack(c.request("conversation:join", map[string]string{"conversation_id": conv}))
	if want := `[{"ok":true,"account_id":"acme","conversation_id":"` + conv + `"}]`; got != want {
		c.t.Fatalf("%s: join %s: %s, want %s", c.name, conv, got, want)
	}
}

// wsConn is a client websocket: masked frames out, one writer at a time.
type wsConn struct {
	conn net.Conn
	fr   sio.FrameReader
	mu   sync.Mutex
	mask [4]byte
}

// openWS opens a websocket to the Hub's Socket.IO endpoint with query.
func (h *fpHub) openWS(t *testing.T, d *net.Dialer, query string) *wsConn {
	t.Helper()
	return openWS(t, h.addr, d, query)
}

// openWS opens a websocket to the Socket.IO endpoint at addr with query.
func openWS(t testing.TB, addr string, d *net.Dialer, query string) *wsConn {
	t.Helper()
	return openWSWith(t, addr, d, query, nil)
}

// openWSWith is openWS sending header with the upgrade request.
func openWSWith(t testing.TB, addr string, d *net.Dialer, query string, header http.Header) *wsConn {
	t.Helper()
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br, err := sio.ClientHandshake(conn, addr, "/socket.io/?EIO=4&transport=websocket"+query, header, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Time{})
	return &wsConn{conn: conn, fr: sio.FrameReader{R: br, Max: 8 << 20}, mask: [4]byte{7, 1, 3, 9}}
}

func (w *wsConn) write(op byte, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.conn.Write(sio.AppendFrame(nil, op, payload, &w.mask))
	return err
}

func (w *wsConn) text(msg []byte) error { return w.write(sio.OpText, msg) }

// nextText reads the next text message (synchronously, before the reader
// runs), within 10 s.
func (w *wsConn) nextText(t testing.TB) string {
	t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = w.conn.SetReadDeadline(time.Time{}) }()
	for {
		op, p, err := w.fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if op == sio.OpText {
			return string(p)
		}
	}
}

// readWS logs what the websocket brings until it ends.
func (c *sioClient) readWS(w *wsConn) {
	for {
		op, p, err := w.fr.Next()
		if err != nil {
			c.end(err.Error())
			return
		}
		switch op {
		case sio.OpText:
			c.handle(p, "websocket", w.text)
		case sio.OpPing:
			_ = w.write(sio.OpPong, p)
		case sio.OpClose:
			if len(p) >= 2 {
				c.end(fmt.Sprintf("close frame %d", int(p[0])<<8|int(p[1])))
			}
			c.end("close frame")
			_ = w.write(sio.OpClose, p)
			return
		}
		if c.stall.Load() {
			<-c.resume
		}
	}
}

// dialWS connects a websocket client (through d) with extra CONNECT auth.
func (h *fpHub) dialWS(t *testing.T, user string, d *net.Dialer, extra map[string]any) *sioClient {
	t.Helper()
	c := h.openClient(t, user, d)
	c.connect(extra)
	return c
}

// openClient opens a websocket client's Engine.IO session; it is not
// connected to the namespace yet.
func (h *fpHub) openClient(t *testing.T, user string, d *net.Dialer) *sioClient {
	t.Helper()
	c := h.newClient(t, user)
	c.ws = h.openWS(t, d, "")
	if open := c.ws.nextText(t); open[0] != sio.EIOOpen {
		t.Fatalf("engine.io open: %q", open)
	}
	c.send = c.ws.text
	go c.readWS(c.ws)
	t.Cleanup(func() {
		c.stall.Store(false)
		c.resumeReader()
	})
	return c
}

func (c *sioClient) resumeReader() {
	select {
	case <-c.resume:
	default:
		close(c.resume)
	}
}

// pollConn is an Engine.IO v4 long-polling connection.
type pollConn struct {
	url     string // with the engine's sid
	sid     string
	ctx     context.Context
	mu      sync.Mutex    // one POST at a time, as the protocol wants
	pause   atomic.Bool   // the GET loop ends after the pending GET (an upgrade)
	stopped chan struct{} // closed when the GET loop has ended
	hold    atomic.Bool   // the GET loop waits for release after the pending GET, once
	holding chan struct{} // closed once it waits
	release chan struct{}
}

// dialPolling connects a long-polling client.
func (h *fpHub) dialPolling(t *testing.T, user string) *sioClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := h.newClient(t, user)
	base := "http://" + h.addr + "/socket.io/?EIO=4&transport=polling"
	body, err := pollGet(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) == 0 || body[0] != sio.EIOOpen {
		t.Fatalf("engine.io open: %q", body)
	}
	var open struct{ Sid string }
	if err := json.Unmarshal(body[1:], &open); err != nil {
		t.Fatal(err)
	}
	p := &pollConn{url: base + "&sid=" + open.Sid, sid: open.Sid, ctx: ctx, stopped: make(chan struct{}),
		holding: make(chan struct{}), release: make(chan struct{})}
	c.poll, c.send = p, p.post
	go c.readPolling()
	t.Cleanup(func() {
		cancel()
		<-p.stopped
	})
	c.connect(nil)
	return c
}

func pollGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET: %s: %s", resp.Status, body)
	}
	return body, err
}

func (p *pollConn) post(msg []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, p.url, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST: %s: %s", resp.Status, body)
	}
	return nil
}

// readPolling long-polls until the connection ends or the loop is paused
// (for an upgrade); records are separated by \x1e.
func (c *sioClient) readPolling() {
	p := c.poll
	defer close(p.stopped)
	for !p.pause.Load() {
		if p.hold.Swap(false) {
			close(p.holding)
			select {
			case <-p.release:
			case <-p.ctx.Done():
				return
			}
		}
		body, err := pollGet(p.ctx, p.url)
		if err != nil {
			c.end(err.Error())
			return
		}
		for _, msg := range bytes.Split(body, []byte{0x1e}) {
			c.handle(msg, "polling", p.post)
			if len(msg) > 0 && msg[0] == sio.EIOClose {
				return
			}
		}
	}
}

// upgrade does the Engine.IO upgrade of a polling client: the probe over a
// websocket of the same session, then the polling loop ends, then "5".
// between runs after each step (probe sent, probe answered, polling
// paused, upgrade sent).
func (c *sioClient) upgrade(between func(step string)) {
	t := c.t
	t.Helper()
	w := c.h.openWS(t, &net.Dialer{}, "&sid="+c.poll.sid)
	if err := w.text([]byte("2probe")); err != nil {
		t.Fatal(err)
	}
	between("probe sent")
	if got := w.nextText(t); got != "3probe" {
		t.Fatalf("probe answered %q", got)
	}
	between("probe answered")
	c.poll.pause.Store(true)
	<-c.poll.stopped // the server ends the pending GET with a noop
	between("polling paused")
	c.mu.Lock()
	c.ws, c.send = w, w.text
	c.mu.Unlock()
	if err := w.text([]byte{sio.EIOUpgrade}); err != nil {
		t.Fatal(err)
	}
	go c.readWS(w)
	between("upgrade sent")
}

// checkMessages asserts that c received exactly m-from ... m-(to-1), each
// once, in order, with increasing recovery offsets.
func checkMessages(t *testing.T, c *sioClient, from, to int) {
	t.Helper()
	var want []string
	for n := from; n < to; n++ {
		want = append(want, "m-"+strconv.Itoa(n))
	}
	if got := c.messages(); !slices.Equal(got, want) {
		t.Errorf("%s: %d messages, want m-%d..m-%d once each in order; first difference at %d:\n got %v",
			c.name, len(got), from, to-1, firstDiff(got, want), abbreviate(got))
	}
	var last [2]uint64
	for _, e := range c.log() {
		if e.name != "conversation:message" {
			continue
		}
		n, ok := offsetKey(e.offset)
		if !ok || !(last[0] < n[0] || last[0] == n[0] && last[1] < n[1]) {
			t.Errorf("%s: offset %q after %v: not increasing", c.name, e.offset, last)
			return
		}
		last = n
	}
}

// offsetKey orders recovery offsets: the in-memory adapter's
// "<prefix>-<base-36 sequence>" and the streams adapter's stream ids
// "<ms>-<sequence>".
func offsetKey(offset string) ([2]uint64, bool) {
	hi, lo, ok := strings.Cut(offset, "-")
	if !ok {
		return [2]uint64{}, false
	}
	if len(hi) >= 13 { // a time in milliseconds; the in-memory prefix is 8 hex digits
		ms, err1 := strconv.ParseUint(hi, 10, 64)
		seq, err2 := strconv.ParseUint(lo, 10, 64)
		return [2]uint64{ms, seq}, err1 == nil && err2 == nil
	}
	seq, err := strconv.ParseUint(lo, 36, 64)
	return [2]uint64{0, seq}, err == nil
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func abbreviate(s []string) string {
	if len(s) <= 12 {
		return fmt.Sprint(s)
	}
	return fmt.Sprint(s[:6], " ... ", s[len(s)-6:])
}

// byTransport counts the conversation:message events by transport.
func byTransport(c *sioClient) map[string]int {
	n := map[string]int{}
	for _, e := range c.log() {
		if e.name == "conversation:message" {
			n[e.transport]++
		}
	}
	return n
}

func TestFastPathOrderAcrossWebsocketAndLibraryPaths(t *testing.T) {
	h := startHub(t)
	ws := h.dialWS(t, "u-ws", &net.Dialer{}, nil)
	lp := h.dialPolling(t, "u-lp")
	for _, c := range []*sioClient{ws, lp} {
		c.join("c-order")
	}
	wsBefore, libBefore := h.deliveries(t)

	// N messages from one goroutine; meanwhile each client asks K
	// questions, answered on its socket directly (the library's path, also
	// on the websocket) while broadcasts are being queued.
	const N, K = 500, 40
	var published atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := range N {
			h.message(t, "c-order", n, 64)
			published.Store(int64(n + 1))
		}
	}()
	var wg sync.WaitGroup
	for _, c := range []*sioClient{ws, lp} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range K {
				for published.Load() < int64(k*N/K) {
					time.Sleep(50 * time.Microsecond)
				}
				c.request("agent:presence:list", map[string]string{"account_id": "acme"})
			}
		}()
	}
	wg.Wait()
	<-done
	for _, c := range []*sioClient{ws, lp} {
		waitUntil(t, c.name+": the last message", func() bool { return c.has("m-" + strconv.Itoa(N-1)) }, c)
		for id := int64(2); id < K+2; id++ { // 1 was the join
			if got := c.ack(id); !strings.HasPrefix(got, `[{"ok":true,`) {
				t.Errorf("%s: ack %d: %s", c.name, id, got)
			}
		}
	}
	for _, c := range []*sioClient{ws, lp} {
		checkMessages(t, c, 0, N)
		c.mu.Lock()
		for id, a := range c.acks {
			if len(a) != 1 {
				t.Errorf("%s: ack %d received %d times", c.name, id, len(a))
			}
		}
		c.mu.Unlock()
	}
	if got := byTransport(ws); got["websocket"] != N {
		t.Errorf("websocket client: messages by transport %v", got)
	}
	if got := byTransport(lp); got["polling"] != N {
		t.Errorf("polling client: messages by transport %v", got)
	}
	wsAfter, libAfter := h.deliveries(t)
	if wsAfter-wsBefore != N || libAfter-libBefore != N {
		t.Errorf("realtime_deliveries_total rose by websocket %v, library %v; want %d each (one socket on each path)",
			wsAfter-wsBefore, libAfter-libBefore, N)
	}
}

func TestFastPathPollingClientUpgradesMidBurst(t *testing.T) {
	h := startHub(t)
	up := h.dialPolling(t, "u-up")
	up.join("c-up")
	wsBefore, libBefore := h.deliveries(t)
	next := 0
	publish := func(count int) {
		for range count {
			h.message(t, "c-up", next, 64)
			next++
		}
	}
	publish(100)
	waitUntil(t, "m-99 over polling", func() bool { return up.has("m-99") })
	up.upgrade(func(step string) { publish(50) }) // 100..299 around the four steps
	waitUntil(t, "a message over the websocket", func() bool { return byTransport(up)["websocket"] > 0 })
	publish(100)
	waitUntil(t, "the last message", func() bool { return up.has("m-399") }, up)

	checkMessages(t, up, 0, 400)
	var order []string // the transports, in the order the messages came
	for _, e := range up.log() {
		if e.name == "conversation:message" && (len(order) == 0 || order[len(order)-1] != e.transport) {
			order = append(order, e.transport)
		}
	}
	if !slices.Equal(order, []string{"polling", "websocket"}) {
		t.Errorf("transports in arrival order %v, want polling then websocket", order)
	}
	n := byTransport(up)
	if n["polling"] < 100 || n["websocket"] < 100 {
		t.Errorf("messages by transport %v: want at least the first 100 over polling and the last 100 over the websocket", n)
	}
	wsAfter, libAfter := h.deliveries(t)
	ws, lib := wsAfter-wsBefore, libAfter-libBefore
	if ws+lib != 400 || lib < 200 || ws < 100 {
		t.Errorf("deliveries: websocket %v, library %v; want 400 in all, at least 200 (up to the upgrade) through the library and the last 100 on the websocket", ws, lib)
	}
	t.Logf("messages by transport %v; deliveries websocket %v, library %v", n, ws, lib)
}

// smallReceiveBuffer dials with a 4 KiB receive buffer, set before the
// connection is made: set later ((*net.TCPConn).SetReadBuffer), the window
// already advertised shrinks and the sender's retransmissions back off for
// seconds instead of waiting for the reader.
var smallReceiveBuffer = &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	}); cerr != nil {
		return cerr
	}
	return err
}}

func TestFastPathStalledClientIsCutOffWithoutDelayingOthers(t *testing.T) {
	const writeTimeout = 2 * time.Second
	h := startHub(t, WithWriteQueueLimit(64), WithWriteTimeout(writeTimeout))
	stalled := h.dialWS(t, "u-stalled", smallReceiveBuffer, nil)
	reader := h.dialWS(t, "u-reader", &net.Dialer{}, nil)
	stalled.join("c-slow")
	reader.join("c-slow")
	slowBefore := metricValue(t, h.metrics.slowClients)
	connected := metricValue(t, h.metrics.connected)
	stalled.stall.Store(true) // reads one more message, then nothing

	const N, body = 1000, 4000
	publishedAt := make([]time.Time, N)
	start := time.Now()
	var slowest time.Duration
	var cutAfter time.Duration
	for n := range N {
		publishedAt[n] = time.Now()
		h.message(t, "c-slow", n, body)
		if d := time.Since(publishedAt[n]); d > slowest {
			slowest = d
		}
		if cutAfter == 0 && metricValue(t, h.metrics.slowClients) > slowBefore {
			cutAfter = time.Since(start)
		}
	}
	waitUntil(t, "the reader's last message", func() bool { return reader.has("m-" + strconv.Itoa(N-1)) }, reader, stalled)
	waitUntil(t, "the stalled client cut off", func() bool {
		return metricValue(t, h.metrics.slowClients) > slowBefore && metricValue(t, h.metrics.connected) == connected-1
	})
	if cutAfter == 0 {
		cutAfter = time.Since(start)
	}

	checkMessages(t, reader, 0, N)
	const bound = writeTimeout * 3 / 4 // what a reader waiting on the stalled one would exceed
	var worst time.Duration
	for _, e := range reader.log() {
		if e.name != "conversation:message" {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(e.id, "m-"))
		worst = max(worst, e.at.Sub(publishedAt[n]))
	}
	if worst > bound || slowest > bound {
		t.Errorf("the reader waited up to %v for a message, a publish took up to %v; want both under %v", worst, slowest, bound)
	}
	if cutAfter > writeTimeout+5*time.Second {
		t.Errorf("the stalled client was cut off %v after the burst began", cutAfter)
	}
	if got := metricValue(t, h.metrics.slowClients) - slowBefore; got != 1 {
		t.Errorf("realtime_slow_clients_disconnected_total rose by %v, want 1", got)
	}
	// The stalled client reads again: what the kernel held, then the end
	// of the connection; the reader is still connected.
	stalled.stall.Store(false)
	stalled.resumeReader()
	waitUntil(t, "the stalled client's connection to end", func() bool { return stalled.endedHow() != "" })
	if got := len(stalled.messages()); got >= N {
		t.Errorf("the stalled client got all %d messages", got)
	}
	if how := reader.endedHow(); how != "" {
		t.Errorf("the reader's connection ended: %s", how)
	}
	t.Logf("reader: worst latency %v, slowest publish %v; stalled client cut off after %v (queue %v, write timeout %v) having read %d messages (%s)",
		worst, slowest, cutAfter, metricValue(t, h.metrics.slowClients.WithLabelValues("queue")),
		metricValue(t, h.metrics.slowClients.WithLabelValues("write timeout")), len(stalled.messages()), stalled.endedHow())
}

// cutAfter connects user over websocket to conversation conv, publishes
// m-0 ... m-(n-1) and, once the client has them, cuts its TCP connection
// without a close frame; meanwhile runs right after the cut, before the
// server may have noticed. It returns the client and the auth fields that
// recover its session, once the server has dropped the socket (and kept
// its session).
func (h *fpHub) cutAfter(t *testing.T, user, conv string, n int, meanwhile func()) (*sioClient, map[string]any) {
	t.Helper()
	c := h.dialWS(t, user, &net.Dialer{}, nil)
	c.join(conv)
	for i := range n {
		h.message(t, conv, i, 64)
	}
	last := "m-" + strconv.Itoa(n-1)
	waitUntil(t, last, func() bool { return c.has(last) })
	log := c.log()
	offset := log[len(log)-1].offset
	sid, pid := c.ids()
	if offset == "" || pid == "" {
		t.Fatalf("offset %q, pid %q: recovery is off?", offset, pid)
	}
	_ = c.ws.conn.Close()
	meanwhile()
	waitUntil(t, "the server to drop the socket", func() bool {
		_, ok := h.io.nsp.Sockets().Load(socket.SocketId(sid))
		return !ok
	})
	return c, map[string]any{"pid": pid, "offset": offset}
}

func (c *sioClient) ids() (sid, pid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sid, c.pid
}

func TestFastPathRecoveryAfterACutConnection(t *testing.T) {
	h := startHub(t)
	first, auth := h.cutAfter(t, "u-rec", "c-rec", 5, func() {
		for n := 5; n < 10; n++ { // written to a dead connection, maybe
			h.message(t, "c-rec", n, 64)
		}
	})
	for n := 10; n < 30; n++ {
		h.message(t, "c-rec", n, 64)
	}

	again := h.dialWS(t, "u-rec", &net.Dialer{}, auth)
	was, _ := first.ids()
	if sid, _ := again.ids(); sid != was {
		t.Fatalf("reconnected as %s, not as the recovered session %s", sid, was)
	}
	waitUntil(t, "the missed messages", func() bool { return again.has("m-29") }, again)
	wsBefore, libBefore := h.deliveries(t)
	next := 30
	for ; next < 35; next++ {
		h.message(t, "c-rec", next, 64)
	}
	waitUntil(t, "the new messages", func() bool { return again.has("m-34") }, again)
	// Back on the fast path: the first messages may still take the
	// library's path behind the catch-up's writes, not for long.
	for ws, _ := h.deliveries(t); ws == wsBefore; ws, _ = h.deliveries(t) {
		if next == 130 {
			t.Fatal("100 messages after the recovery, none went through the websocket path")
		}
		h.message(t, "c-rec", next, 64)
		last := "m-" + strconv.Itoa(next)
		waitUntil(t, last, func() bool { return again.has(last) }, again)
		next++
	}

	checkMessages(t, first, 0, 5)
	checkMessages(t, again, 5, next)
	ws, lib := h.deliveries(t)
	if got := ws - wsBefore + lib - libBefore; got != float64(next-30) {
		t.Errorf("realtime_deliveries_total rose by %v for %d messages to one socket", got, next-30)
	}
	t.Logf("after the recovery: %v messages through the websocket path, %v through the library's", ws-wsBefore, lib-libBefore)
}

// shutdownUnderLoad connects three websocket clients (and, with polling, a
// long-polling client) to one conversation, publishes from one goroutine
// and shuts the Hub down while the messages flow. The polling client is
// between two long-polls from just before Shutdown until Shutdown has
// notified and released every connection, as a client some milliseconds
// away may be. It returns the clients once every connection has ended, and
// how many messages were published before Shutdown began.
func shutdownUnderLoad(t *testing.T, polling bool, opts ...Option) ([]*sioClient, int) {
	t.Helper()
	h := startHub(t, opts...)
	var clients []*sioClient
	for i := range 3 {
		clients = append(clients, h.dialWS(t, fmt.Sprintf("u-ws%d", i), &net.Dialer{}, nil))
	}
	var lp *sioClient
	if polling {
		lp = h.dialPolling(t, "u-lp")
		clients = append(clients, lp)
	}
	for _, c := range clients {
		c.join("c-down")
	}
	var published atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < 20000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.Publish(context.Background(), "conversation.message.created", map[string]any{
				"account_id": "acme", "conversation_id": "c-down", "message_id": "m-" + strconv.Itoa(n),
			}); err != nil {
				return // the Hub is closed
			}
			published.Store(int64(n + 1))
		}
	}()
	waitUntil(t, "some messages", func() bool { return published.Load() >= 50 })
	if lp != nil {
		lp.poll.hold.Store(true)
		<-lp.poll.holding // its last GET returned
	}
	before := int(published.Load())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	if lp != nil {
		waitUntil(t, "Shutdown to notify and release every connection", func() bool {
			released := true
			h.conns.Range(func(any, any) bool { released = false; return false })
			return h.closing.Load() && released
		})
		close(lp.poll.release)
	}
	<-shut
	close(stop)
	<-done
	for _, c := range clients {
		waitUntil(t, c.name+": the end of its connection", func() bool { return c.endedHow() != "" }, c)
	}
	return clients, before
}

// checkAllOrNone asserts that every client received the same messages, a
// prefix of those published (each once, in order) covering at least those
// published before Shutdown, and one shutdown notice.
func checkAllOrNone(t *testing.T, clients []*sioClient, before int) {
	t.Helper()
	var counts []int
	for _, c := range clients {
		counts = append(counts, len(c.messages()))
	}
	for _, c := range clients {
		checkMessages(t, c, 0, len(c.messages()))
		if len(c.messages()) != counts[0] {
			t.Errorf("messages received: %v; each message must reach every socket or none", counts)
			break
		}
	}
	if slices.Min(counts) < before {
		t.Errorf("messages received: %v; %d were published before Shutdown began", counts, before)
	}
	for _, c := range clients {
		notices := 0
		for _, e := range c.log() {
			if e.name == EventShutdown {
				notices++
			}
		}
		if notices != 1 {
			t.Errorf("%s: %d %s notices, want 1", c.name, notices, EventShutdown)
		}
	}
	t.Logf("published before Shutdown %d, received %v; ended: %s", before, counts, endings(clients))
}

func TestFastPathShutdownDeliversEachEventToAllOrNone(t *testing.T) {
	clients, before := shutdownUnderLoad(t, false)
	checkAllOrNone(t, clients, before)
	for _, c := range clients {
		if !strings.HasPrefix(c.endedHow(), "close frame") {
			t.Errorf("%s: the connection ended with %q, want a close frame after everything queued", c.name, c.endedHow())
		}
	}
}

// A polling client gets what was queued for it before the close, the
// notice included, as a websocket client does: Shutdown waits (within its
// deadline) for its next long-poll.
func TestFastPathShutdownPollingClientGetsWhatWasQueued(t *testing.T) {
	clients, before := shutdownUnderLoad(t, true)
	checkAllOrNone(t, clients, before)
}

func endings(clients []*sioClient) string {
	var s []string
	for _, c := range clients {
		s = append(s, c.name+": "+c.endedHow())
	}
	return strings.Join(s, ", ")
}

// The shutdown notice is the last thing a client hears before the close:
// no broadcast reaches the sockets after it.
func TestFastPathShutdownNoticeIsTheLastEvent(t *testing.T) {
	clients, _ := shutdownUnderLoad(t, false)
	for _, c := range clients {
		log := c.log()
		last := -1
		for i, e := range log {
			if e.name == EventShutdown {
				last = i
			}
		}
		if last < 0 {
			t.Errorf("%s: no %s notice", c.name, EventShutdown)
			continue
		}
		if after := len(log) - 1 - last; after != 0 {
			t.Errorf("%s: %d events after the %s notice, the first %s %s", c.name, after, EventShutdown, log[last+1].name, log[last+1].arg)
		}
	}
}

// gatedVerifier is staticVerifier that, while armed, stops each Verify
// until released (a slow identity provider), after telling entered.
type gatedVerifier struct {
	staticVerifier
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedVerifier) Verify(ctx context.Context, token string) (Identity, error) {
	if g.armed.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.staticVerifier.Verify(ctx, token)
}

// A recovered socket gets every message published while it reconnects:
// those before its session was restored as missed packets, those after as
// broadcasts, including those published while its token is verified again
// (the Hub runs the middlewares on recovery).
func TestFastPathRecoveryKeepsWhatIsPublishedDuringTheReconnect(t *testing.T) {
	gv := &gatedVerifier{entered: make(chan struct{}), release: make(chan struct{})}
	h := startHub(t, WithTokenVerifier(gv))
	_, auth := h.cutAfter(t, "u-gap", "c-gap", 3, func() {})
	for n := 3; n < 5; n++ {
		h.message(t, "c-gap", n, 64)
	}

	gv.armed.Store(true)
	again := h.openClient(t, "u-gap", &net.Dialer{})
	again.sendConnect(auth)
	<-gv.entered // the session is restored; the token is being verified
	gv.armed.Store(false)
	for n := 5; n < 7; n++ {
		h.message(t, "c-gap", n, 64)
	}
	close(gv.release)
	again.waitConnected()
	h.message(t, "c-gap", 7, 64)
	waitUntil(t, "m-7", func() bool { return again.has("m-7") })
	checkMessages(t, again, 3, 8)
}
