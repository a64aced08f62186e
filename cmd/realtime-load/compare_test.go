package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/turumba/realtime/internal/testenv"
)

// compare deletes what its servers declared: the session's queue, its
// dead-letter queue and exchange.
func TestForgetQueueDeletesTheSessionsTopology(t *testing.T) {
	const url = "amqp://guest:guest@127.0.0.1:5672"
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Missing(t, "no RabbitMQ at %s: %v", url, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := fmt.Sprintf("realtime-load-test-%d.events", time.Now().UnixNano())
	if err := ch.ExchangeDeclare(queue+".dlx", amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{queue, queue + ".dead"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}

	var out strings.Builder
	forgetQueue(url, queue, &out)
	if !strings.Contains(out.String(), "deleted the session's queues") {
		t.Errorf("forgetQueue said %q", out.String())
	}
	// A passive declare of something deleted closes the channel: one each.
	for _, q := range []string{queue, queue + ".dead"} {
		c, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.QueueDeclarePassive(q, true, false, false, false, nil); err == nil {
			t.Errorf("queue %s is still there", q)
			_, _ = c.QueueDelete(q, false, false, false)
		}
	}
	c, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ExchangeDeclarePassive(queue+".dlx", amqp.ExchangeFanout, true, false, false, false, nil); err == nil {
		t.Errorf("exchange %s.dlx is still there", queue)
		_ = c.ExchangeDelete(queue+".dlx", false, false)
	}
}
