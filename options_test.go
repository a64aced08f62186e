package realtime

import (
	"strings"
	"testing"
	"time"
)

func TestNewDefaults(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(t.Context())
	if _, ok := h.presence.(*MemoryPresence); !ok {
		t.Errorf("default presence store is %T, want *MemoryPresence", h.presence)
	}
	if _, err := h.verifier.Verify(t.Context(), "anything"); err == nil {
		t.Error("the default verifier must refuse every token")
	}
}

func TestOptionValidation(t *testing.T) {
	cases := []struct {
		name string
		opt  Option
		want string
	}{
		{"nil source", WithEventSource(nil), "WithEventSource"},
		{"nil presence", WithPresenceStore(nil), "WithPresenceStore"},
		{"nil verifier", WithTokenVerifier(nil), "WithTokenVerifier"},
		{"nil authorizer", WithAuthorizer(nil), "WithAuthorizer"},
		{"nil logger", WithLogger(nil), "WithLogger"},
		{"nil metrics", WithMetrics(nil), "WithMetrics"},
		{"bad origin", WithCORS("localhost:3000"), "WithCORS"},
		{"zero typing ttl", WithTypingTTL(0), "WithTypingTTL"},
		{"short presence ttl", WithPresenceTTL(time.Second), "WithPresenceTTL"},
		{"negative recovery", WithRecoveryWindow(-time.Second), "WithRecoveryWindow"},
		{"zero handshake", WithHandshakeTimeout(0), "WithHandshakeTimeout"},
		{"zero rate", WithClientRateLimit(RateLimit{}), "WithClientRateLimit"},
		{"zero typing rate", WithTypingRateLimit(RateLimit{PerSecond: 1}), "WithTypingRateLimit"},
		{"tiny payload", WithMaxPayloadBytes(10), "WithMaxPayloadBytes"},
		{"bad routes", WithRoutes([]Route{{Event: "x"}}), "WithRoutes"},
		{"unnamed check", WithReadinessCheck("", nil), "WithReadinessCheck"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := New(c.opt)
			if err == nil {
				h.Shutdown(t.Context())
				t.Fatal("New accepted a bad option")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
		})
	}
}

func TestOptionsAccepted(t *testing.T) {
	h, err := New(WithCORS("*", "https://app.example.com"), WithTypingTTL(time.Second),
		WithPresenceTTL(30*time.Second), WithRecoveryWindow(0), WithClientRateLimit(RateLimit{PerSecond: 1, Burst: 1}))
	if err != nil {
		t.Fatal(err)
	}
	h.Shutdown(t.Context())
}
