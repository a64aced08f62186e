package presence

import "testing"

// The conformance suite runs against the memory store in the root package
// (presence_memory_test.go), where its code lives.

func TestNewMemoryStoreTTL(t *testing.T) {
	if got := NewMemoryStore(0).TTL(); got != DefaultTTL {
		t.Fatalf("NewMemoryStore(0).TTL() = %v, want %v", got, DefaultTTL)
	}
	if got := NewMemoryStore(DefaultTTL / 2).TTL(); got != DefaultTTL/2 {
		t.Fatalf("TTL = %v, want %v", got, DefaultTTL/2)
	}
}
