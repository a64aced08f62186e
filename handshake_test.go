package realtime

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/turumba/realtime/internal/sio"
)

// serverSocket is the library's socket behind a connected client.
func serverSocket(t *testing.T, h *fpHub, c *sioClient) *socket.Socket {
	t.Helper()
	c.mu.Lock()
	sid := c.sid
	c.mu.Unlock()
	v, ok := h.conns.Load(sid)
	if !ok {
		t.Fatalf("no connection %s", sid)
	}
	return v.(*conn).sc.(*sockConn).sock
}

// A browser's upgrade request carries cookies, client hints and the like;
// the socket keeps only the headers the service reads, and no token once
// it has been verified (from the CONNECT auth or the Authorization header).
func TestHandshakeKeepsNoCookiesAndNoToken(t *testing.T) {
	for k := range keptHeader {
		if c := http.CanonicalHeaderKey(k); c != k {
			t.Errorf("keptHeader has %q; request headers are keyed %q", k, c)
		}
	}
	h := startHub(t)
	browser := http.Header{
		"Cookie":          {"session=s3cret-of-another-service"},
		"Accept-Language": {"en-GB,en;q=0.9"},
		"Sec-Ch-Ua":       {`"Chromium";v="142"`},
		"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0"},
	}
	for _, how := range []string{"auth", "header"} {
		t.Run(how, func(t *testing.T) {
			header := browser.Clone()
			c := h.newClient(t, "u-"+how)
			if how == "header" {
				header.Set("Authorization", "Bearer "+c.token)
				c.token = "" // the CONNECT auth has none; the header is used
			}
			c.ws = wsOpen(t, h, header)
			c.send = c.ws.text
			go c.readWS(c.ws)
			c.connect(map[string]any{"client": "inbox"})

			sock := serverSocket(t, h, c)
			hs := sock.Handshake()
			for _, k := range []string{"Cookie", "Accept-Language", "Sec-Ch-Ua", "Authorization"} {
				if v, ok := hs.Headers[k]; ok {
					t.Errorf("handshake keeps %s: %v", k, v)
				}
				if v := sock.Request().Request().Header.Values(k); len(v) > 0 {
					t.Errorf("request keeps %s: %v", k, v)
				}
			}
			if ua := sock.Request().Headers().Peek("User-Agent"); ua != browser.Get("User-Agent") {
				t.Errorf("User-Agent = %q, want it kept", ua)
			}
			if _, ok := hs.Auth["token"]; ok {
				t.Error("handshake auth keeps the token")
			}
			if hs.Auth["client"] != "inbox" {
				t.Errorf("handshake auth = %v, want the other fields kept", hs.Auth)
			}
			if id, ok := sock.Data().(*Identity); !ok || id.Subject != "u-"+how {
				t.Errorf("identity = %+v, want u-%s", sock.Data(), how)
			}
		})
	}
}

// wsOpen opens a websocket Engine.IO session with header and reads its
// open packet.
func wsOpen(t *testing.T, h *fpHub, header http.Header) *wsConn {
	t.Helper()
	w := openWSWith(t, h.addr, &net.Dialer{}, "", header)
	if open := w.nextText(t); open[0] != sio.EIOOpen {
		t.Fatalf("engine.io open: %q", open)
	}
	return w
}

// BenchmarkKeptHeaders trims a browser's websocket upgrade request; the
// kept map is held for the socket's life, so B/op is memory per connection.
func BenchmarkKeptHeaders(b *testing.B) {
	upgrade := http.Header{
		"Connection":               {"Upgrade"},
		"Upgrade":                  {"websocket"},
		"Pragma":                   {"no-cache"},
		"Cache-Control":            {"no-cache"},
		"User-Agent":               {"Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0"},
		"Origin":                   {"https://inbox.example.com"},
		"Sec-Websocket-Version":    {"13"},
		"Sec-Websocket-Key":        {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Extensions": {"permessage-deflate; client_max_window_bits"},
		"Accept-Encoding":          {"gzip, deflate, br"},
		"Accept-Language":          {"en-GB,en;q=0.9"},
		"Cookie":                   {"session=s3cret-of-another-service"},
		"Sec-Ch-Ua":                {`"Chromium";v="142"`},
	}
	b.ReportAllocs()
	var kept http.Header
	for b.Loop() {
		kept = keptHeaders(upgrade)
	}
	if len(kept) != 8 {
		b.Fatalf("kept %d headers, want 8: %v", len(kept), kept)
	}
}

// A client event over the payload bound gets an invalid_payload
// acknowledgement; a websocket message over the bound plus 1 KiB (the
// engine's MaxHttpBufferSize, as for polling) closes the connection with
// close code 1009, and the other clients carry on.
func TestWebsocketMessagesOverTheBound(t *testing.T) {
	h := startHub(t, WithMaxPayloadBytes(1000))
	c := h.dialWS(t, "u-big", &net.Dialer{}, nil)
	other := h.dialWS(t, "u-other", &net.Dialer{}, nil)

	over := map[string]string{"account_id": strings.Repeat("x", 1500)}
	if got := c.ack(c.request("account:subscribe", over)); !strings.Contains(got, `"error":"invalid_payload"`) {
		t.Fatalf("a 1.5 KB payload: %s, want invalid_payload", got)
	}
	c.request("account:subscribe", map[string]string{"account_id": strings.Repeat("x", 3000)})
	waitUntil(t, "the connection to end", func() bool { return c.endedHow() != "" }, c)
	if how := c.endedHow(); how != "close frame 1009" {
		t.Errorf("a 3 KB message: the connection ended with %q, want close frame 1009", how)
	}
	other.join("c-after")
}
