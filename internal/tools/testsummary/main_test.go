package main

import (
	"strings"
	"testing"
)

func TestSummarizeKeepsFailuresAndListsSkips(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestOK"}`,
		`{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK"}`,
		`{"Action":"output","Package":"p","Test":"TestBad","Output":"    x_test.go:3: boom\n"}`,
		`{"Action":"output","Package":"p","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBad"}`,
		`{"Action":"output","Package":"p","Test":"TestRedis","Output":"    h_test.go:9: no Redis at redis://127.0.0.1:6379\n"}`,
		`{"Action":"output","Package":"p","Test":"TestRedis","Output":"--- SKIP: TestRedis (0.00s)\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestRedis"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t0.01s\n"}`,
		`{"Action":"fail","Package":"p"}`,
		`# p [p.test]`,
		`{"Action":"output","Package":"q","Output":"?   \tq\t[no test files]\n"}`,
		`{"Action":"skip","Package":"q"}`,
	}, "\n")
	var out strings.Builder
	skipped, err := summarize(strings.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 1 || skipped[0] != "p TestRedis" {
		t.Errorf("skipped %v, want [p TestRedis]", skipped)
	}
	want := "    x_test.go:3: boom\n--- FAIL: TestBad (0.00s)\n" +
		"SKIP p TestRedis: h_test.go:9: no Redis at redis://127.0.0.1:6379\n" +
		"FAIL\tp\t0.01s\n# p [p.test]\n?   \tq\t[no test files]\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
