package loadclient

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Dialer spreads connections over several loopback source addresses, so
// that tens of thousands of connections to one server port do not exhaust
// the ephemeral ports of a single source address.
type Dialer struct {
	Sources []net.IP // nil: the kernel picks (127.0.0.1)
	Timeout time.Duration
	n       atomic.Uint64
}

// NewDialer returns a dialer over n source addresses 127.0.0.2...; n <= 1
// uses the kernel's choice.
func NewDialer(n int, timeout time.Duration) (*Dialer, error) {
	d := &Dialer{Timeout: timeout}
	if n > 250 {
		return nil, fmt.Errorf("at most 250 source addresses, got %d", n)
	}
	if n > 1 {
		for i := 0; i < n; i++ {
			d.Sources = append(d.Sources, net.IPv4(127, 0, 0, byte(2+i)))
		}
	}
	return d, nil
}

// SourcesFor is how many source addresses n connections need, keeping each
// well inside the default ephemeral port range (32768-60999).
func SourcesFor(n int) int { return max(1, (n+19999)/20000) }

// DialContext dials addr from the next source address in turn.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.Timeout}
	if len(d.Sources) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.Sources[d.n.Add(1)%uint64(len(d.Sources))]}
	}
	return nd.DialContext(ctx, network, addr)
}

// RaiseFileLimit raises this process's open-file soft limit to its hard
// limit (children inherit it) and returns the new soft limit.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return lim.Cur, nil
}
