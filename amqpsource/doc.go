// Package amqpsource is the RabbitMQ EventSource of the Hub: it consumes the
// domain events published to a topic exchange and hands them, one at a time
// and in order, to the Hub's handler. It is a realtime.PipelinedEventSource
// too: with ConsumePipelined the handler may return before an event is done,
// so that several events are in flight.
//
// # Topology
//
// On every (re)connect a Source declares a durable topic exchange (default
// "messaging"), a fanout dead-letter exchange ("{queue}.dlx") with a durable
// dead-letter queue ("{queue}.dead") bound to it, and a durable queue (default
// "realtime.events") whose x-dead-letter-exchange is that exchange. The queue
// is bound with exactly the patterns given to Consume, which the Hub derives
// from its routing table, so the bindings cannot drift from the table. No
// dead-letter routing key is set, so a dead-lettered message keeps its original
// routing key and body. RabbitMQ refuses to redeclare a queue with other
// arguments; the Source then logs the queue and the argument and keeps
// retrying until an operator deletes the old queue.
//
// # Delivery
//
// Deliveries are acknowledged manually after the handler returns: nil acks,
// an error wrapping realtime.ErrInvalidEvent nacks without requeue (the
// message goes to the dead-letter queue, logged once with its routing key and
// size, never its body), any other error is transient: after a backoff the
// delivery is nacked with requeue and the channel is reopened, so that the
// deliveries prefetched behind it are returned to the queue too and the event
// is redelivered before them.
//
// ConsumePipelined hands over the next delivery without waiting for the
// previous one's outcome; the prefetch (WithPrefetch) bounds how many are in
// flight. Each is settled as above when its done is called, on the consuming
// goroutine, whatever the order of the calls. A transient failure is held
// while the other events in flight finish and are settled; then, after the
// backoff, it (and any other that failed transiently) is requeued and the
// channel reopened. Events behind it that were already in flight have been
// acknowledged by then, so a requeued event is redelivered after them: a
// transient failure can reorder a pipelined stream, where Consume keeps it in
// order.
//
// Connection or channel loss, and a consumer
// cancelled by the broker, reopen everything with capped exponential backoff
// and jitter; unacknowledged deliveries are redelivered by the broker, so
// delivery is at least once and a handler sees a few duplicates after a loss.
//
// # Order
//
// A Source runs one consumer on one channel and calls the handler from a
// single goroutine, so one instance handles events in queue order. With
// several instances on the same queue, the queue's x-single-active-consumer
// argument (on by default) lets only one of them consume at a time; the others
// wait as standbys and the broker hands the queue to one of them when the
// active one goes away, returning its unacknowledged deliveries to the head of
// the queue first. Events of one conversation therefore reach clients in
// publish order with one instance or many (with ConsumePipelined, unless a
// transient failure requeued one, as above). The trade-off: the fleet's consume
// rate is one instance's rate, which is enough for a relay (see BENCH.md);
// fan-out to browsers still scales out because every instance emits through
// the Socket.IO Redis adapter. On shutdown the Source takes no more
// deliveries, lets the events in flight finish (the one being handled, or
// with ConsumePipelined every one whose done is pending, within the drain
// timeout) and settles them, then closes its channel: closing, rather
// than cancelling the consumer first, returns the prefetched deliveries and
// activates the standby in one step, so the standby cannot receive later
// events before the returned ones.
package amqpsource
