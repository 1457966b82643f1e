package keyspace

import "strconv"

// Asynq's queues. Asynq keeps each queue's keys under one hash tag, the
// queue's name, so a queue lives on one master of a cluster. The webhook
// retries are split over QueueSplit queues whose names are chosen, like
// the shard tags, to fall in equal parts of the slot range; a session's
// retries go to the queue of its shard's part.
//
//	<ns>:webhooks:<k>-<j>   webhook retries, replays and dead deliveries of part k
//	<ns>:maintenance        sweeps and recoveries

// QueueSplit is the number of webhook queues.
const QueueSplit = 3

// WebhookQueues returns the webhook queues, part 0 first.
func (s Space) WebhookQueues() []string {
	qs := make([]string, QueueSplit)
	width := SlotCount / QueueSplit
	for k := range qs {
		lo, hi := k*width+width/4, (k+1)*width-width/4
		for j := 0; ; j++ {
			name := s.ns + "webhooks:" + strconv.Itoa(k) + "-" + strconv.Itoa(j)
			if slot := Slot(name); slot >= lo && slot < hi {
				qs[k] = name
				break
			}
		}
	}
	return qs
}

// WebhookQueue is the webhook queue of shard sh, given WebhookQueues' result.
func WebhookQueue(queues []string, sh Shard) string {
	return queues[int(sh)*len(queues)/Shards]
}

// MaintenanceQueue is the queue of sweeps and recoveries.
func (s Space) MaintenanceQueue() string { return s.ns + "maintenance" }
