package loadstats

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; it
// is 100 on every Linux the tool runs on (sysconf needs cgo).
const clockTick = 10 * time.Millisecond

// ProcSample is one reading of a process's resources.
type ProcSample struct {
	At      time.Time
	CPU     time.Duration // user + system time since the process started
	RSS     int64         // resident set size, bytes (VmRSS)
	Threads int
}

// ReadProc samples /proc/<pid>/stat and /proc/<pid>/status.
func ReadProc(pid int) (ProcSample, error) {
	s := ProcSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.RSS, s.Threads, err = parseStatus(status)
	if err != nil {
		return s, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return s, nil
}

// parseStatCPU reads utime and stime, fields 14 and 15 of /proc/<pid>/stat;
// the command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("no command name")
	}
	f := strings.Fields(string(stat[end+1:])) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q stime %q", f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

func parseStatus(status []byte) (rss int64, threads int, err error) {
	found := false
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "VmRSS":
			kb, perr := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
			if perr != nil {
				return 0, 0, fmt.Errorf("VmRSS %q", v)
			}
			rss, found = kb*1024, true
		case "Threads":
			threads, _ = strconv.Atoi(v)
		}
	}
	if !found {
		return 0, 0, fmt.Errorf("no VmRSS (a zombie?)")
	}
	return rss, threads, nil
}

// MachineCPU is the CPU time all cores spent busy (not idle or waiting for
// I/O) since boot, from /proc/stat: what else runs on the machine shows as
// busy time that neither the server nor the tool used.
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineCPU(b)
}

func parseMachineCPU(stat []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d: %q", i+1, v)
		}
		switch i {
		case 3, 4: // idle, iowait
		case 8, 9: // guest time is already counted in user
		default:
			busy += n
		}
	}
	return time.Duration(busy) * clockTick, nil
}
