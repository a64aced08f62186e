// Command realtime-load measures the realtime service under load, and can
// serve a baseline relay to measure it against.
//
//	realtime-load baseline -port 3298                     # the lean reference relay
//	realtime-load run      -target http://127.0.0.1:3299 -pid P -rate 20000 -duration 30s
//	realtime-load saturate -target http://127.0.0.1:3299 -pid P
//	realtime-load idle     -target http://127.0.0.1:3299 -pid P -clients 5000
//	realtime-load connects -rs256 -server '/tmp/rt -port 3299' -server-env 'JWKS_URI={jwks}' -server-env 'COGNITO_ISSUER={issuer}' ...
//	realtime-load compare  -ours /tmp/rt                  # everything, both servers, one table
//	realtime-load soak     -server '/tmp/rt -dev -port 3299' -target http://127.0.0.1:3299 -duration 20m
//
// Its clients are lean Socket.IO clients over raw websockets, one goroutine
// each, so that the tool costs little next to the server it measures. It
// only ever targets loopback addresses, and every run is bounded in clients
// and time. docs/performance.md describes what it measures and how, and the
// figures it gave.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "realtime-load:", err)
		}
		os.Exit(1)
	}
}

const usage = `Usage: realtime-load <command> [flags]

Commands:
  baseline   serve the baseline relay (the practical limit of this machine)
  run        open-loop load at a target delivery rate
  saturate   ramp the delivery rate until latency or loss explodes
  idle       connect idle clients: resident memory per connection, connects/s
  connects   connects/s (dev HS256 tokens, or -rs256 against a JWKS the tool serves)
  compare    every measurement, against the baseline and our binary, in one session
  soak       connect/disconnect churn and events at half of saturation: goroutines and RSS flat at the end?

Run "realtime-load <command> -h" for its flags. Targets must be loopback.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "baseline":
		return runBaseline(ctx, rest, stdout, stderr)
	case "run", "saturate", "idle", "connects":
		return runLoad(ctx, cmd, rest, stdout, stderr)
	case "compare":
		return runCompare(ctx, rest, stdout, stderr)
	case "soak":
		return runSoak(ctx, rest, stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
