package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/turumba/realtime/internal/loadclient"
	"github.com/turumba/realtime/internal/loadstats"
)

// target is the server under load: its address and, when known, its process.
type target struct {
	base string // http://127.0.0.1:3299
	addr string // 127.0.0.1:3299
	pid  int    // 0: no /proc figures
	cmd  *exec.Cmd
	log  *os.File
}

// newTarget checks base (loopback only) and optionally starts the server
// with command, environment additions env, writing its output to logPath.
func newTarget(ctx context.Context, base string, pid int, command []string, env []string, logPath string) (*target, error) {
	if err := loadclient.CheckLoopback(base); err != nil {
		return nil, err
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" || u.Port() == "" {
		return nil, fmt.Errorf("target %q: want http://127.0.0.1:PORT", base)
	}
	t := &target{base: strings.TrimSuffix(base, "/"), addr: u.Host, pid: pid}
	if len(command) > 0 {
		if pid != 0 {
			return nil, errors.New("give -pid or -server, not both")
		}
		if c, err := net.DialTimeout("tcp", t.addr, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s is already in use: another server would be measured in place of the one started", t.addr)
		}
		if err := t.start(command, env, logPath); err != nil {
			return nil, err
		}
	}
	if err := t.waitHealthy(ctx, 20*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	if t.pid != 0 {
		if _, err := loadstats.ReadProc(t.pid); err != nil {
			t.stop()
			return nil, fmt.Errorf("server process %d: %w", t.pid, err)
		}
	}
	return t, nil
}

func (t *target) start(command, env []string, logPath string) error {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), env...)
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return err
		}
		t.log = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tool
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", command[0], err)
	}
	t.cmd, t.pid = cmd, cmd.Process.Pid
	return nil
}

func (t *target) waitHealthy(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if t.cmd != nil && t.cmd.ProcessState != nil {
			return fmt.Errorf("server exited: %s", t.cmd.ProcessState)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("server at %s not healthy within %s: %v", t.base, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proc samples the server process; ok is false without a pid.
func (t *target) proc() (loadstats.ProcSample, bool) {
	if t.pid == 0 {
		return loadstats.ProcSample{}, false
	}
	s, err := loadstats.ReadProc(t.pid)
	return s, err == nil
}

// stop ends a server the tool started: SIGTERM, then SIGKILL after 30 s.
func (t *target) stop() {
	if t.cmd == nil {
		return
	}
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = t.cmd.Process.Kill()
		<-done
	}
	if t.log != nil {
		_ = t.log.Close()
	}
	t.cmd = nil
}

// runtimeMetrics reads the Go runtime's figures from the server's
// Prometheus endpoint (the service's GET /metrics; the baseline serves the
// same names); it is empty when the server has none.
func (t *target) runtimeMetrics(ctx context.Context) runtimeMetrics {
	m := runtimeMetrics{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/metrics", nil)
	if err != nil {
		return m
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, cut := strings.Cut(line, " ")
		if !cut || !runtimeMetricNames[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			m[name] = v
		}
	}
	return m
}

// runtimeMetrics maps metric names to values.
type runtimeMetrics map[string]float64

var runtimeMetricNames = map[string]bool{
	"go_goroutines": true, "go_memstats_heap_inuse_bytes": true, "go_memstats_alloc_bytes_total": true,
	"go_memstats_mallocs_total": true, "go_gc_duration_seconds_count": true,
}

// delta is m's value of name minus earlier's; ok when both have it.
func (m runtimeMetrics) delta(earlier runtimeMetrics, name string) (float64, bool) {
	v1, ok1 := m[name]
	v0, ok0 := earlier[name]
	return v1 - v0, ok0 && ok1
}
