// A Herald backend in JavaScript, with nothing but the npm "nats" client:
// it decides who may connect (herald.auth.<name>) and streams Local
// connections (herald.local.<name>). The edge's tests run it against a
// real NATS server: node backend.mjs nats://127.0.0.1:4222
//
// Names and what the backend does with them:
//   auth   JsDeny    deny: 403 "js says no"
//          JsAssign  allow, assigning group "js-group" and clientId "js-<session cookie>"
//          JsSlow    never answer (the edge times out)
//          anything else: allow
//   local  JsReport  three events (one typed, with an id), then the end marker
//          JsQuiet   nothing at all (the edge's idle timeout ends it)
import { connect, headers } from "nats";

const nc = await connect({ servers: process.argv[2] ?? "nats://127.0.0.1:4222", name: "herald-jsbackend" });
const enc = new TextEncoder();
const dec = new TextDecoder();

async function auth() {
  for await (const m of nc.subscribe("herald.auth.*", { queue: "herald-auth" })) {
    const req = JSON.parse(dec.decode(m.data));
    let answer = { allow: true };
    switch (req.name) {
      case "JsDeny":
        answer = { allow: false, status: 403, reason: "js says no" };
        break;
      case "JsAssign":
        answer = { allow: true, group: "js-group", clientId: "js-" + (req.cookies?.session ?? "anon"), subject: "js-user" };
        break;
      case "JsSlow":
        continue; // no answer: the edge refuses the connection as unavailable
    }
    m.respond(enc.encode(JSON.stringify(answer)));
  }
}

async function local() {
  for await (const m of nc.subscribe("herald.local.*", { queue: "herald-local" })) {
    const req = JSON.parse(dec.decode(m.data));
    if (req.name === "JsQuiet") {
      continue; // a stalled backend
    }
    nc.publish(m.reply, enc.encode(`hello ${req.clientId}`));
    const h = headers();
    h.set("Herald-Event", "pode.progress");
    h.set("Herald-Id", "1");
    nc.publish(m.reply, enc.encode("50"), { headers: h });
    nc.publish(m.reply, enc.encode("done"));
    nc.publish(m.reply, new Uint8Array(0)); // the end marker: an empty message
  }
}

auth();
local();
await nc.flush();
console.log("ready");
