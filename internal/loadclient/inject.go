package loadclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/turumba/realtime/internal/loadstats"
)

// Poster publishes one event; each injector goroutine has its own.
type Poster interface {
	Publish(ctx context.Context, routingKey string, event []byte) error
	Close() error
}

// HTTPPoster posts events to the server's POST /dev/events over a kept-alive
// connection.
type HTTPPoster struct {
	hc  *http.Client
	url string
	buf []byte
}

// NewHTTPTransport is a transport for the injector and token requests:
// keep-alive, no proxy (loopback only), no compression.
func NewHTTPTransport(d *Dialer, conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
}

// NewHTTPPoster posts to base+"/dev/events".
func NewHTTPPoster(hc *http.Client, base string) *HTTPPoster {
	return &HTTPPoster{hc: hc, url: base + "/dev/events", buf: make([]byte, 0, 512)}
}

// Publish posts {"routing_key": ..., "event": ...} and expects 202.
func (p *HTTPPoster) Publish(ctx context.Context, routingKey string, event []byte) error {
	p.buf = append(p.buf[:0], `{"routing_key":"`...)
	p.buf = append(p.buf, routingKey...)
	p.buf = append(p.buf, `","event":`...)
	p.buf = append(p.buf, event...)
	p.buf = append(p.buf, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.buf))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /dev/events: %s: %.200s", resp.Status, body)
	}
	return nil
}

// Close does nothing: the shared client owns the connections.
func (p *HTTPPoster) Close() error { return nil }

// AMQPPoster publishes events to a RabbitMQ topic exchange on its own
// channel, optionally waiting for the broker's confirm of each.
type AMQPPoster struct {
	ch       *amqp.Channel
	exchange string
	confirm  bool
}

// NewAMQPPoster opens a channel on conn; with confirm, each Publish returns
// once the broker has taken the message.
func NewAMQPPoster(conn *amqp.Connection, exchange string, confirm bool) (*AMQPPoster, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp channel: %w", err)
	}
	if confirm {
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return nil, fmt.Errorf("amqp confirm mode: %w", err)
		}
	}
	return &AMQPPoster{ch: ch, exchange: exchange, confirm: confirm}, nil
}

// Publish sends one persistent JSON message with the routing key.
func (p *AMQPPoster) Publish(ctx context.Context, routingKey string, event []byte) error {
	msg := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: event}
	if !p.confirm {
		return p.ch.PublishWithContext(ctx, p.exchange, routingKey, false, false, msg)
	}
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, routingKey, false, false, msg)
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("amqp: the broker nacked the message")
	}
	return nil
}

// Close closes the channel.
func (p *AMQPPoster) Close() error { return p.ch.Close() }

// Kind is which events the driver sends.
type Kind int

const (
	// KindAccount sends conversation.created: one emit to an account room,
	// numbered per account.
	KindAccount Kind = iota
	// KindConversation sends conversation.message.created: conversation:message
	// to the conversation room (numbered per conversation) and
	// conversation:updated to the account room (timed and counted only).
	KindConversation
)

// ParseKind reads "account" or "conversation".
func ParseKind(s string) (Kind, error) {
	switch s {
	case "account":
		return KindAccount, nil
	case "conversation":
		return KindConversation, nil
	}
	return 0, fmt.Errorf("event kind %q: want account or conversation", s)
}

func (k Kind) String() string {
	if k == KindConversation {
		return "conversation"
	}
	return "account"
}

// stream numbers the events of one account or conversation and remembers
// which were published, and when (for the books of clients that come and go).
type stream struct {
	mu   sync.Mutex
	next uint64
	sent loadstats.SeqSet
	at   []int64 // at[seq]: when its publish was accepted (Unix ns); 0 if not
}

func (s *stream) take() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	return s.next
}

func (s *stream) published(seq uint64) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sent.Add(seq); !ok {
		return
	}
	if n := int(seq) + 1; n > len(s.at) {
		s.at = append(s.at, make([]int64, max(n, 2*len(s.at), 64)-len(s.at))...)
	}
	s.at[seq] = now
}

// Driver publishes events at a paced rate, round-robin over the accounts and
// their conversations, and keeps the books on what each client is owed.
type Driver struct {
	Layout  Layout
	Kind    Kind
	posters []Poster

	acctMembers []int   // connected clients per account
	convMembers [][]int // per account, per conversation
	acct        []stream
	conv        [][]stream
	k           atomic.Uint64 // events so far, across phases
}

// NewDriver prepares a driver for the clients that are connected (the others
// are owed nothing).
func NewDriver(l Layout, kind Kind, posters []Poster, clients []*Client) *Driver {
	d := &Driver{Layout: l, Kind: kind, posters: posters,
		acctMembers: make([]int, l.Accounts), convMembers: make([][]int, l.Accounts),
		acct: make([]stream, l.Accounts), conv: make([][]stream, l.Accounts)}
	for a := range d.convMembers {
		d.convMembers[a] = make([]int, l.Conversations(a))
		d.conv[a] = make([]stream, l.Conversations(a))
	}
	for _, c := range clients {
		d.acctMembers[c.Account]++
		d.convMembers[c.Account][c.Conv]++
	}
	return d
}

// RecipientsPerEvent is the average number of deliveries one event makes.
func (d *Driver) RecipientsPerEvent() float64 {
	var total float64
	for a, n := range d.acctMembers {
		r := float64(n)
		if d.Kind == KindConversation { // round-robin over the account's conversations too
			sum := 0
			for _, m := range d.convMembers[a] {
				sum += m
			}
			r += float64(sum) / float64(len(d.convMembers[a]))
		}
		total += r
	}
	return total / float64(len(d.acctMembers))
}

// Run publishes events at eventsPerSec for dur, charging them to ph, and
// returns when the last one is published (or ctx ends). Each poster takes
// the next event's slot in the schedule, waits for it, and publishes; when
// the server slows the posters down they fall behind the schedule, which
// shows as injector lag and a lower achieved rate.
func (d *Driver) Run(ctx context.Context, ph *Phase, eventsPerSec float64, dur time.Duration) {
	if eventsPerSec <= 0 {
		return
	}
	interval := time.Duration(float64(time.Second) / eventsPerSec)
	total := int64(dur / interval)
	start := time.Now()
	var slot atomic.Int64
	var wg sync.WaitGroup
	for pi, p := range d.posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 512)
			for ctx.Err() == nil {
				i := slot.Add(1) - 1
				if i >= total {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				ph.Lag.Record(pi, time.Since(due))
				buf = d.publish(ctx, p, ph, buf)
			}
		}()
	}
	wg.Wait()
}

func (d *Driver) publish(ctx context.Context, p Poster, ph *Phase, buf []byte) []byte {
	k := d.k.Add(1) - 1
	a := int(k % uint64(d.Layout.Accounts))
	c := int((k / uint64(d.Layout.Accounts)) % uint64(len(d.conv[a])))
	var s *stream
	var key string
	recipients := d.acctMembers[a]
	if d.Kind == KindConversation {
		s, key = &d.conv[a][c], KeyConversation
		recipients += d.convMembers[a][c]
	} else {
		s, key = &d.acct[a], KeyAccount
	}
	seq := s.take()
	if d.Kind == KindConversation {
		buf = AppendMessageEvent(buf[:0], a, c, seq, time.Now())
	} else {
		buf = AppendAccountEvent(buf[:0], a, c, seq, time.Now())
	}
	if err := p.Publish(ctx, key, buf); err != nil {
		ph.Failed.Add(1)
		return buf
	}
	s.published(seq)
	ph.Sent.Add(1)
	ph.Expected.Add(uint64(recipients))
	return buf
}

// Sent returns what was published on client c's streams, for Missing.
// Call it when no Run is in progress.
func (d *Driver) Sent(c *Client) (acct, conv *loadstats.SeqSet) {
	if d.Kind == KindConversation {
		return nil, &d.conv[c.Account][c.Conv].sent
	}
	return &d.acct[c.Account].sent, nil
}
