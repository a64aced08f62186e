package fastpath

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
)

// ForUpgrade wraps the ResponseWriter of a websocket upgrade request so
// that, once the connection is hijacked, the wrapper no longer holds the
// HTTP server's response (and through it the connection's 8 KB of read
// and write buffers, which a hijacked websocket never uses). The library
// keeps the request's context, and so the writer, for the socket's life.
func ForUpgrade(w http.ResponseWriter, r *http.Request) http.ResponseWriter {
	if r.Header.Get("Upgrade") == "" {
		return w
	}
	return &upgradeWriter{w: w}
}

type upgradeWriter struct {
	mu     sync.Mutex
	w      http.ResponseWriter // nil once hijacked
	header http.Header
}

func (u *upgradeWriter) current() http.ResponseWriter {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.w
}

func (u *upgradeWriter) Header() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.w != nil {
		return u.w.Header()
	}
	if u.header == nil {
		u.header = http.Header{}
	}
	return u.header
}

func (u *upgradeWriter) Write(b []byte) (int, error) {
	if w := u.current(); w != nil {
		return w.Write(b)
	}
	return 0, http.ErrHijacked
}

func (u *upgradeWriter) WriteHeader(code int) {
	if w := u.current(); w != nil {
		w.WriteHeader(code)
	}
}

func (u *upgradeWriter) Flush() {
	if f, ok := u.current().(http.Flusher); ok {
		f.Flush()
	}
}

func (u *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	hj, ok := u.w.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("fastpath: the response cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err == nil {
		u.w = nil
	}
	return c, rw, err
}
