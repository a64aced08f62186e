// Command testsummary reads `go test -json` on stdin and prints what the
// plain `go test` would: each package's result line and the output of the
// tests that failed. It also lists the tests that skipped, and with
// -no-skips it fails when any did: in CI the services run, and a test that
// skipped is a test that did not run.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	noSkips := flag.Bool("no-skips", false, "fail when any test skipped")
	flag.Parse()
	skipped, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if *noSkips && len(skipped) > 0 {
		fmt.Printf("%d tests skipped, and none may (REALTIME_REQUIRE_SERVICES=1)\n", len(skipped))
		os.Exit(1)
	}
}

// summarize copies the package lines and the failed tests' output from r to
// w, and returns the tests that skipped ("package TestName").
func summarize(r io.Reader, w io.Writer) ([]string, error) {
	output := map[string][]string{} // a running test's output, by package and test
	var skipped []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(w, sc.Text()) // a build error, not an event
			continue
		}
		key := e.Package + " " + e.Test
		switch {
		case e.Test == "" && e.Action == "output":
			fmt.Fprint(w, e.Output)
		case e.Action == "output":
			output[key] = append(output[key], e.Output)
		case e.Action == "fail":
			fmt.Fprint(w, strings.Join(output[key], ""))
			delete(output, key)
		case e.Action == "skip" && e.Test == "": // a package without tests
		case e.Action == "skip":
			skipped = append(skipped, key)
			fmt.Fprintf(w, "SKIP %s%s", key, lastLine(output[key]))
			delete(output, key)
		case e.Action == "pass":
			delete(output, key)
		}
	}
	return skipped, sc.Err()
}

// lastLine is the reason a skipped test gave (the line before its
// "--- SKIP"), or a newline.
func lastLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "--- SKIP") && !strings.HasPrefix(l, "=== ") {
			return ": " + l + "\n"
		}
	}
	return "\n"
}
