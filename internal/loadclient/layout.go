// Package loadclient is the client side of the load tool: lean Socket.IO
// connections over raw websockets (one goroutine each), the layout of
// clients into accounts and conversations, the tokens they present, and the
// injector that publishes timestamped, numbered events at a paced rate.
package loadclient

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// Layout places N clients into A accounts and, within each account, into
// conversations of K agents: client i is in account i%A, and its rank
// i/A within the account puts it in conversation rank/K.
type Layout struct {
	Clients  int
	Accounts int
	ConvSize int
}

// Validate checks the layout's bounds.
func (l Layout) Validate() error {
	switch {
	case l.Clients < 1:
		return fmt.Errorf("clients must be at least 1, got %d", l.Clients)
	case l.Accounts < 1 || l.Accounts > l.Clients:
		return fmt.Errorf("accounts must be between 1 and the number of clients (%d), got %d", l.Clients, l.Accounts)
	case l.ConvSize < 1:
		return fmt.Errorf("conversation size must be at least 1, got %d", l.ConvSize)
	}
	return nil
}

// Account is client i's account index.
func (l Layout) Account(i int) int { return i % l.Accounts }

// Conversation is client i's conversation index within its account.
func (l Layout) Conversation(i int) int { return (i / l.Accounts) / l.ConvSize }

// AccountSize is the number of clients in account a.
func (l Layout) AccountSize(a int) int {
	n := l.Clients / l.Accounts
	if a < l.Clients%l.Accounts {
		n++
	}
	return n
}

// Conversations is the number of conversations in account a.
func (l Layout) Conversations(a int) int { return (l.AccountSize(a) + l.ConvSize - 1) / l.ConvSize }

// AccountID is the id of account a.
func AccountID(a int) string { return "acct-" + strconv.Itoa(a) }

// ConversationID is the id of conversation c of account a.
func ConversationID(a, c int) string { return "conv-" + strconv.Itoa(a) + "-" + strconv.Itoa(c) }

// UserID is the token subject of client i: every client is its own agent.
func UserID(i int) string { return "load-" + strconv.Itoa(i) }

// CheckLoopback refuses any target that is not on this machine's loopback:
// the tool generates load and must never aim it elsewhere. rawURL is an
// http, ws or amqp URL; "localhost" must resolve to loopback addresses only.
func CheckLoopback(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("target %q: %w", rawURL, err)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("target %q has no host", rawURL)
	}
	return CheckLoopbackHost(host)
}

// CheckLoopbackHost refuses a host name or address that is not loopback.
func CheckLoopbackHost(host string) error {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("refusing non-loopback target %s: the load tool only targets this machine", host)
		}
		return nil
	}
	if host != "localhost" {
		return fmt.Errorf("refusing target %q: give a loopback address (127.0.0.1, ::1 or localhost)", host)
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return fmt.Errorf("resolve localhost: %v", err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("refusing localhost: it resolves to %s, not loopback", ip)
		}
	}
	return nil
}
