// A Herald task worker in JavaScript, on the npm "nats" client and
// nothing else: it speaks the worker protocol README.md documents.
//
//   node worker.mjs <nats-urls> [route-key] [tasks]
//
// For each task of the route's consumer (POST_process-data by default) it
// reports Running, reports progress 25, 50 and 75, publishes an event of
// its own to the task's stream, and reports Completed with a result that
// echoes the request's body; then it acknowledges the work message. It
// exits after [tasks] tasks (default 1).
import { connect, headers, StringCodec } from "nats";

const [urls = "nats://127.0.0.1:4222", routeKey = "POST_process-data", count = "1"] = process.argv.slice(2);
const sc = StringCodec();
const nc = await connect({ servers: urls.split(","), name: "herald-jsworker", maxReconnectAttempts: -1 });
const js = nc.jetstream();

// report sends one report and returns the edges' reply, retrying while no
// edge answers.
async function report(id, body) {
  for (let i = 0; ; i++) {
    try {
      const m = await nc.request(`herald.task.report.${id}`, sc.encode(JSON.stringify(body)), { timeout: 5000 });
      return JSON.parse(sc.decode(m.data));
    } catch (err) {
      if (i >= 20) { throw err; }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

let consumer = null;
while (consumer === null) {
  try {
    consumer = await js.consumers.get("HERALD_TASK_QUEUE", routeKey);
  } catch {
    await new Promise((r) => setTimeout(r, 250)); // the edges create it
  }
}
for (let done = 0; done < Number(count);) {
  const m = await consumer.next({ expires: 5000 });
  if (m === null) { continue; }
  const id = m.headers.get("Herald-Task-Id");
  const subject = m.headers.get("Herald-Task-Subject");
  const attempt = m.info.deliveryCount;
  const start = await report(id, { state: "Running", attempt, worker: "jsworker" });
  if (start.stop) { m.ack(); continue; }
  for (const p of [25, 50, 75]) {
    m.working(); // renew the lease
    const r = await report(id, { progress: p });
    if (r.stop) { break; }
  }
  const h = headers();
  h.set("Herald-Event", "js.note");
  await js.publish(subject, sc.encode(JSON.stringify({ from: "javascript", attempt })), { headers: h });
  const body = sc.decode(m.data);
  await report(id, { state: "Completed", result: { worker: "javascript", echo: body ? JSON.parse(body) : null } });
  await m.ackAck();
  done++;
  console.log(`completed task ${id}`);
}
await nc.drain();
