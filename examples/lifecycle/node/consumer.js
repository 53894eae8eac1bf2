// Herald lifecycle consumer: who comes and goes, from any Node.js backend.
//
// Every Herald edge publishes a connect event when a client connects and a
// disconnect event when it leaves, on
//
//   herald.sys.lifecycle.<event>.<edge>.<name>.<group>.<clientId>
//
// with a JSON body (event, edge, conn, name, group, clientId, transport,
// connectedAt, and for a disconnect reason, disconnectedAt, durationMs).
// When an edge dies, another edge publishes the disconnects of its
// connections with reason "edge_lost".
//
// A client that reconnects can have a second connection (a new conn token)
// before the first one's disconnect arrives, so this consumer tracks
// connections by token and reports a user online when its first connection
// opens and offline when its last one closes.
//
//   node consumer.js [--nats nats://127.0.0.1:4222] [--prefix herald]
//                    [--durable NAME [--stream HERALD_LIFECYCLE]] [--count N]
//
// --durable reads the events kept in the lifecycle stream (cmd/edge
// -lifecycle-max-age) through a durable consumer: a consumer that was
// stopped reads what happened meanwhile when it starts again. Without it,
// the consumer subscribes and sees what happens from now on. --count stops
// after N events.

import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";

function options(argv) {
  const o = { nats: "nats://127.0.0.1:4222", prefix: "herald", durable: "", stream: "", count: 0 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--?/, "");
    if (!(key in o) || i + 1 >= argv.length) {
      throw new Error(`unknown option or missing value: ${argv[i]}`);
    }
    o[key] = key === "count" ? Number(argv[++i]) : argv[++i];
  }
  if (!o.stream) {
    o.stream = o.prefix.toUpperCase().replaceAll(".", "_") + "_LIFECYCLE";
  }
  return o;
}

// rawId is the id part of a signed clientId ("s:<id>.<signature>").
function rawId(clientId) {
  const dot = clientId.lastIndexOf(".");
  return clientId.startsWith("s:") && dot > 2 ? clientId.slice(2, dot) : clientId;
}

// Presence tracks the open connections of each (name, clientId).
class Presence {
  constructor() {
    this.users = new Map(); // "name\nclientId" -> Set of conn tokens
  }

  apply(ev) {
    const key = `${ev.name}\n${rawId(ev.clientId)}`;
    const conns = this.users.get(key) ?? new Set();
    const before = conns.size;
    if (ev.event === "connect") {
      conns.add(ev.conn);
    } else {
      conns.delete(ev.conn);
    }
    if (conns.size > 0) {
      this.users.set(key, conns);
    } else {
      this.users.delete(key);
    }
    if (before === 0 && conns.size > 0) {
      return `online ${ev.name} ${rawId(ev.clientId)}`;
    }
    if (before > 0 && conns.size === 0) {
      return `offline ${ev.name} ${rawId(ev.clientId)} (${ev.reason})`;
    }
    return "";
  }
}

function describe(ev) {
  const who = `edge=${ev.edge} conn=${ev.conn} name=${ev.name} group=${ev.group} clientId=${ev.clientId} transport=${ev.transport}`;
  if (ev.event === "connect") {
    return `connect ${who}${ev.restored ? " restored" : ""}`;
  }
  const by = ev.reportedBy ? ` reportedBy=${ev.reportedBy}` : "";
  return `disconnect ${who} reason=${ev.reason} durationMs=${ev.durationMs ?? 0}${by}`;
}

async function main() {
  const o = options(process.argv.slice(2));
  const nc = await connect({ servers: o.nats, name: "herald-lifecycle-consumer" });
  const subject = `${o.prefix}.sys.lifecycle.>`;
  const presence = new Presence();
  let seen = 0;
  const handle = (data) => {
    const ev = JSON.parse(new TextDecoder().decode(data));
    console.log(describe(ev));
    const change = presence.apply(ev);
    if (change) {
      console.log(change);
    }
    seen++;
    return o.count > 0 && seen >= o.count;
  };

  if (o.durable) {
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(o.stream, {
      durable_name: o.durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: subject,
    });
    const consumer = await jetstream(nc).consumers.get(o.stream, o.durable);
    const messages = await consumer.consume();
    console.log(`reading ${o.stream} as ${o.durable}`);
    for await (const m of messages) {
      const done = handle(m.data);
      m.ack();
      if (done) {
        break;
      }
    }
  } else {
    const sub = nc.subscribe(subject);
    await nc.flush();
    console.log(`listening on ${subject}`);
    for await (const m of sub) {
      if (handle(m.data)) {
        break;
      }
    }
  }
  await nc.drain();
}

main().catch((err) => {
  console.error(`lifecycle consumer: ${err.message}`);
  process.exit(1);
});
