package redisadapter

import (
	"strconv"
	"strings"
)

// streamID is a Redis stream entry id, "<milliseconds>-<sequence>", which
// orders entries and serves as the offset clients echo back on recovery.
type streamID struct{ ms, seq uint64 }

// parseID reads an entry id; it accepts only the full "ms-seq" form.
func parseID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return streamID{}, false
	}
	return streamID{ms, seq}, true
}

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

// less reports whether id orders before o.
func (id streamID) less(o streamID) bool {
	return id.ms < o.ms || id.ms == o.ms && id.seq < o.seq
}

// next is the smallest id after id, to start an XRANGE after it.
func (id streamID) next() streamID {
	if id.seq == ^uint64(0) {
		return streamID{id.ms + 1, 0}
	}
	return streamID{id.ms, id.seq + 1}
}

func maxID(a, b streamID) streamID {
	if a.less(b) {
		return b
	}
	return a
}
