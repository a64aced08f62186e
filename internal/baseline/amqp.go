package baseline

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQPBindings are the routing-key patterns the relay consumes.
var AMQPBindings = []string{"conversation.#", "agent.presence.*", "queue.updated"}

// ConsumeAMQP consumes events from a server-named, exclusive queue bound to
// exchange (a durable topic exchange, declared if absent) until ctx ends,
// acknowledging each after its broadcast; unroutable events are rejected.
// The queue goes away with the connection, so it never collects events
// while another server is being measured.
func (s *Server) ConsumeAMQP(ctx context.Context, url, exchange string, prefetch int) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("baseline: amqp dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("baseline: amqp channel: %w", err)
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("baseline: declare exchange %q: %w", exchange, err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("baseline: declare queue: %w", err)
	}
	for _, key := range AMQPBindings {
		if err := ch.QueueBind(q.Name, key, exchange, false, nil); err != nil {
			return fmt.Errorf("baseline: bind %q: %w", key, err)
		}
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return fmt.Errorf("baseline: qos: %w", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, q.Name, "realtime-load-baseline", false, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("baseline: consume: %w", err)
	}
	for d := range deliveries {
		if err := s.Publish(d.RoutingKey, d.Body); err != nil {
			s.log.Warn("baseline: rejecting event", "routing_key", d.RoutingKey, "error", err)
			_ = d.Reject(false)
			continue
		}
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("baseline: ack: %w", err)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("baseline: amqp deliveries closed")
}
