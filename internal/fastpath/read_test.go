package fastpath

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/zishang520/socket.io/v3/pkg/types"
)

func TestReadMessageReadsWholeMessagesOfTheirOwnSize(t *testing.T) {
	for _, size := range []int{0, 1, 2047, 2048, 2049, 5000, maxPooledRead + 1} {
		want := bytes.Repeat([]byte("x"), size)
		for _, r := range []io.Reader{bytes.NewReader(want), iotest.OneByteReader(bytes.NewReader(want)), iotest.HalfReader(bytes.NewReader(want))} {
			got, err := readMessage(r)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d: read %d bytes, not the message", size, len(got))
			}
			if cap(got) != size {
				t.Errorf("size %d: capacity %d; the message is kept at its own size", size, cap(got))
			}
		}
	}
	// A message read right after a large one is not mixed up with it.
	if got, err := readMessage(strings.NewReader("3")); err != nil || string(got) != "3" {
		t.Errorf("after a large message: %q, %v", got, err)
	}
}

func TestReadMessageReportsAFailedRead(t *testing.T) {
	cut := errors.New("read limit exceeded")
	r := io.MultiReader(strings.NewReader("40/agents,"), iotest.ErrReader(cut))
	if got, err := readMessage(r); !errors.Is(err, cut) || got != nil {
		t.Errorf("got %q, %v; want nil, %v", got, err, cut)
	}
}

// BenchmarkReadMessage is the garbage per message a client sends: a pong
// and a CONNECT with a Cognito token, read the way the library's buffer
// reads (the baseline of the same run) and with readMessage.
func BenchmarkReadMessage(b *testing.B) {
	connect := `40/agents,{"token":"` + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 50) + `"}`
	for _, m := range []struct{ name, msg string }{{"pong", "3"}, {"connect", connect}} {
		b.Run(m.name+"/library-buffer", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf := types.NewStringBuffer(nil)
				if _, err := buf.ReadFrom(strings.NewReader(m.msg)); err != nil || buf.Len() != len(m.msg) {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/readMessage", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				msg, err := readMessage(strings.NewReader(m.msg))
				if err != nil || len(msg) != len(m.msg) {
					b.Fatal(err)
				}
				_ = types.NewStringBuffer(msg)
			}
		})
	}
}
