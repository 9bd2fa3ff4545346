import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { type HttpTransport, MAX_RESPONSE_BYTES } from "../../../lib/stripe/transport.js";
import { createUndiciTransport } from "../../../lib/stripe/undici-transport.js";
import { createWireTransport } from "../../../lib/stripe/wire.js";

// The transport against a real HTTP server on loopback: answers, stalls, oversized bodies.

let server: Server;
let base = "";
let connections = 0;
before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/stall") return; // never answers
      if (req.url === "/twice") {
        res.writeHead(200, [
          ["Set-Cookie", "a=1"],
          ["Set-Cookie", "b=2"],
          ["Request-Id", "req_twice"],
        ]);
        res.end("{}");
        return;
      }
      if (req.url === "/huge") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(Buffer.alloc(MAX_RESPONSE_BYTES + 1, 0x20));
        return;
      }
      res.writeHead(201, { "Request-Id": "req_123", "Content-Type": "application/json" });
      // Split a multi-byte character across two writes.
      const body = Buffer.from(JSON.stringify({ echo: Buffer.concat(chunks).toString("utf8"), snow: "☃" }));
      res.write(body.subarray(0, body.length - 4));
      res.end(body.subarray(body.length - 4));
    });
  });
  server.on("connection", () => connections++);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

// The contract both transports keep (lib/stripe/wire.ts is the default, undici the alternative).
const transports: Array<[string, (o: { connections?: number }) => HttpTransport]> = [
  ["undici", createUndiciTransport],
  ["wire", createWireTransport],
];
for (const [name, createTransport] of transports)
  describe(`${name} transport`, () => {
    test("returns status, lower-cased headers and the whole body", async () => {
      const t = createTransport({ connections: 2 });
      const res = await t.send({ method: "POST", url: `${base}/echo`, headers: {}, body: "héllo", timeoutMs: 2_000 });
      assert.equal(res.status, 201);
      assert.equal(res.headers["request-id"], "req_123");
      assert.deepEqual(JSON.parse(res.body), { echo: "héllo", snow: "☃" });
      await t.close();
    });

    test("a request that gets no answer fails with a TimeoutError", async () => {
      const t = createTransport({ connections: 2 });
      await assert.rejects(
        t.send({ method: "POST", url: `${base}/stall`, headers: {}, body: "{}", timeoutMs: 200 }),
        (err: Error) => err.name === "TimeoutError",
      );
      await t.close();
    });

    test("a request still queued behind a stalled one times out too", async () => {
      const t = createTransport({ connections: 1 });
      const stalled = t.send({ method: "POST", url: `${base}/stall`, headers: {}, body: "{}", timeoutMs: 1_000 });
      const queued = t.send({ method: "POST", url: `${base}/echo`, headers: {}, body: "{}", timeoutMs: 200 });
      await assert.rejects(queued, (err: Error) => err.name === "TimeoutError");
      await assert.rejects(stalled, (err: Error) => err.name === "TimeoutError");
      await t.close();
    });

    test("a repeated response header is joined into one value", async () => {
      const t = createTransport({ connections: 1 });
      const res = await t.send({ method: "GET", url: `${base}/twice`, headers: {}, timeoutMs: 2_000 });
      assert.equal(res.headers["set-cookie"], "a=1, b=2");
      assert.equal(res.headers["request-id"], "req_twice");
      await t.close();
    });

    test("each of many stalled requests times out on its own, and an answered one never does", async () => {
      const t = createTransport({ connections: 8 });
      const answered = t.send({ method: "POST", url: `${base}/echo`, headers: {}, body: "{}", timeoutMs: 150 });
      const stalled = Array.from({ length: 6 }, (_, i) =>
        t.send({ method: "POST", url: `${base}/stall`, headers: {}, body: "{}", timeoutMs: 100 + i * 50 }),
      );
      assert.equal((await answered).status, 201);
      const started = Date.now();
      const outcomes = await Promise.allSettled(stalled);
      outcomes.forEach((o, i) => {
        assert.equal(o.status, "rejected");
        const reason = (o as PromiseRejectedResult).reason as Error;
        assert.equal(reason.name, "TimeoutError");
        // Each names its own deadline, not the first one's.
        assert.match(reason.message, new RegExp(`within ${100 + i * 50} ms`));
      });
      // The last one was due 350 ms after it was sent, not at the first one's time. A lower bound
      // only: a slow machine makes it longer, never shorter.
      assert.ok(Date.now() - started >= 200, `all timed out after ${Date.now() - started} ms`);
      // Past every deadline, the answered request's promise is still the answer (settled once).
      assert.equal((await answered).status, 201);
      await t.close();
    });

    test("refuses a response body over the size limit", async () => {
      const t = createTransport({ connections: 1 });
      await assert.rejects(
        t.send({ method: "GET", url: `${base}/huge`, headers: {}, timeoutMs: 5_000 }),
        /larger than/,
      );
      await t.close();
    });

    test("a refused connection is an error with ECONNREFUSED", async () => {
      const t = createTransport({ connections: 1 });
      await assert.rejects(
        t.send({ method: "POST", url: "http://127.0.0.1:9/x", headers: {}, body: "{}", timeoutMs: 2_000 }),
        (err: Error & { code?: string }) => err.code === "ECONNREFUSED",
      );
      await t.close();
    });
  });

describe("undici transport, pipelined", () => {
  test("pipelining sends several requests on one connection and all are answered", async () => {
    const t = createUndiciTransport({ connections: 1, pipelining: 4 });
    const before = connections;
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        t.send({ method: "POST", url: `${base}/echo`, headers: {}, body: String(i), timeoutMs: 2_000 }),
      ),
    );
    assert.deepEqual(
      answers.map((a) => JSON.parse(a.body).echo),
      Array.from({ length: 8 }, (_, i) => String(i)),
    );
    assert.equal(connections - before, 1);
    await t.close();
  });
});
