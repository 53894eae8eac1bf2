// Package tasks runs Pode's async routes on NATS: long tasks started by an
// HTTP request on any edge, run by workers in any language, their progress
// and completion pushed to an SSE stream through Herald's ordinary events.
//
// Three NATS pieces, all JetStream, all named from the subject prefix
// ("herald" below):
//
//   - the work queue: stream HERALD_TASK_QUEUE (work-queue retention) on
//     herald.task.run.<route key>, one message per task, its body the
//     request's body. Each route has one durable pull consumer named by the
//     route key (e.g. POST_process-data) whose MaxAckPending is the route's
//     cluster-wide limit of running tasks: the server never hands out more
//     unacknowledged messages than that, whatever the number of edges and
//     workers. A worker holds its message (and so its slot) while it runs
//     the task, renewing the lease (AckWait) as it goes; a worker that dies
//     stops renewing and the server redelivers the message to another
//     worker once the lease lapses.
//   - the task records: key-value bucket HERALD_TASKS, key t.<id>, one JSON
//     Record per task, changed only by compare-and-set, so that every state
//     change has one winner. Each write carries a per-message TTL: the
//     record disappears on its own when its retention ends. Key d.<id> is
//     the task's deadline: created with a TTL of the route's timeout, its
//     expiry leaves a marker every edge's watcher sees; the edges race to
//     set the record to Aborted ("Timeout") and one wins. No edge is
//     special: there is no housekeeping process.
//   - reports: a worker tells the edges what happens with NATS requests on
//     herald.task.report.<id> (JSON, see Report); the edges answer in a
//     queue group, apply the change to the record and publish the events
//     on the worker's behalf. Stop requests reach the running worker on
//     herald.task.stop.<id> and in the answer to its next report.
//
// Progress, completion and the worker's own events are ordinary Herald
// events on the task's stream address (name "<path>_events?Id=<id>", the
// stream's URL), so history, resume by Last-Event-ID on any edge and the
// encode-once fan-out apply unchanged.
//
// Delivery is at least once: a task whose worker died is run again, with
// the same task id and a higher attempt number (Task.Attempt), so a
// handler can make its side effects idempotent. Exactly once is not
// possible: a worker cannot both finish its side effects and record that it
// did in one atomic step.
//
// Files:
//
//	protocol.go  subjects, headers, names, Record, Report and Reply
//	service.go   the edges' side: queue, records, reports, stops, deadlines
//	worker.go    the Go worker SDK
//	progress.go  Pode's Set-PodeAsyncRouteProgress for workers
package tasks
