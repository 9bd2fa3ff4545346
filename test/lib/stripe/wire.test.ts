import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createWireTransport } from "../../../lib/stripe/wire.js";

// lib/stripe/wire.ts against servers that answer byte for byte as scripted: the framings,
// splits and connection behaviours a real server or proxy may show.

interface Seen {
  /** Each request's head and body as received. */
  requests: string[];
  connections: number;
}

/**
 * A TCP server that reads each request (head and Content-Length body) and answers with
 * `answer(request index, raw request, socket)`: a string to write, or undefined when it writes itself.
 */
async function scripted(answer: (i: number, raw: string, socket: net.Socket) => string | undefined) {
  const seen: Seen = { requests: [], connections: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    seen.connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buf = "";
    socket.on("data", (d) => {
      buf += d.toString("latin1");
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const length = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const raw = buf.slice(0, end + 4 + length);
        buf = buf.slice(end + 4 + length);
        seen.requests.push(raw);
        const out = answer(seen.requests.length - 1, raw, socket);
        if (out !== undefined) socket.write(out, "latin1");
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const stop = () => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return { url, seen, stop };
}

const ok = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

const post = (url: string, body = "{}", timeoutMs = 2_000) => ({
  method: "POST" as const,
  url,
  headers: { "content-type": "application/json", "idempotency-key": "k1" },
  body,
  timeoutMs,
});

const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});

describe("wire transport", () => {
  test("writes a well-formed request: method, path and query, host, headers, Content-Length, body", async () => {
    const s = await scripted(() => ok("{}"));
    cleanups.push(s.stop);
    const t = createWireTransport();
    await t.send(post(`${s.url}/v1/billing/meter_events?x=1`, "a=1&b=é"));
    const raw = s.seen.requests[0] as string;
    const port = new URL(s.url).port;
    assert.match(raw, /^POST \/v1\/billing\/meter_events\?x=1 HTTP\/1\.1\r\n/);
    assert.match(raw, new RegExp(`\\r\\nhost: 127\\.0\\.0\\.1:${port}\\r\\n`));
    assert.match(raw, /\r\nidempotency-key: k1\r\n/);
    assert.match(raw, /\r\ncontent-length: 8\r\n\r\na=1&b=\xc3\xa9$/);
    // An ASCII request goes out byte for byte too (written as latin1, the same bytes).
    await t.send(post(`${s.url}/v1/x`, "plain=1"));
    assert.match(s.seen.requests[1] as string, /\r\ncontent-length: 7\r\n\r\nplain=1$/);
    await t.close();
  });

  test("a large body (a v2 batch) arrives whole and exact, ASCII or not", async () => {
    const s = await scripted(() => ok("{}"));
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1 });
    const ascii = JSON.stringify({
      events: Array.from({ length: 100 }, (_, i) => ({ identifier: `mh_${i}`.padEnd(43, "x") })),
    });
    const utf8 = `${ascii.slice(0, -2)}"☃é"}`;
    for (const body of [ascii, utf8]) {
      await t.send(post(`${s.url}/v2/billing/meter_event_stream`, body));
      const raw = Buffer.from(s.seen.requests.at(-1) as string, "latin1");
      const sent = Buffer.from(body, "utf8");
      assert.ok(raw.toString("latin1").includes(`\r\ncontent-length: ${sent.length}\r\n\r\n`));
      assert.ok(raw.subarray(raw.length - sent.length).equals(sent), "the body's bytes, UTF-8");
    }
    await t.close();
  });

  test("reads a chunked answer, with chunk extensions, trailers and every byte in its own packet", async () => {
    const body = JSON.stringify({ object: "billing.meter_event", snow: "☃" });
    const bytes = Buffer.from(body);
    const wire = Buffer.concat([
      Buffer.from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRequest-Id: req_chunked\r\n\r\n"),
      Buffer.from(`5;name=x\r\n`),
      bytes.subarray(0, 5),
      Buffer.from(`\r\n${(bytes.length - 5).toString(16)}\r\n`),
      bytes.subarray(5),
      Buffer.from("\r\n0\r\nX-Trailer: yes\r\n\r\n"),
    ]);
    const s = await scripted((_i, _raw, socket) => {
      let k = 0;
      const step = () => {
        if (k < wire.length) socket.write(wire.subarray(k, ++k), () => setImmediate(step));
      };
      step();
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport();
    const res = await t.send(post(`${s.url}/x`));
    assert.equal(res.status, 200);
    assert.equal(res.headers["request-id"], "req_chunked");
    assert.equal(res.body, body);
    // The connection is reused after a chunked answer.
    await t.send(post(`${s.url}/x`));
    assert.equal(s.seen.connections, 1);
    await t.close();
  });

  test("skips a 100 Continue and reads the answer after it", async () => {
    const s = await scripted(() => `HTTP/1.1 100 Continue\r\n\r\n${ok('{"a":1}')}`);
    cleanups.push(s.stop);
    const t = createWireTransport();
    const res = await t.send(post(`${s.url}/x`));
    assert.equal(res.status, 200);
    assert.equal(res.body, '{"a":1}');
    await t.close();
  });

  test("an answer without a length ends with the connection, which is not reused", async () => {
    const s = await scripted((_i, _raw, socket) => {
      socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"until":"close"}');
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport();
    assert.equal((await t.send(post(`${s.url}/x`))).body, '{"until":"close"}');
    assert.equal((await t.send(post(`${s.url}/x`))).body, '{"until":"close"}');
    assert.equal(s.seen.connections, 2);
    await t.close();
  });

  test("Connection: close and HTTP/1.0 answers are not reused; 204 has no body", async () => {
    const s = await scripted((i) =>
      i === 0
        ? ok("{}", "connection: close\r\n")
        : i === 1
          ? "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}"
          : "HTTP/1.1 204 No Content\r\n\r\n",
    );
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1 });
    await t.send(post(`${s.url}/x`));
    await t.send(post(`${s.url}/x`));
    const res = await t.send({ method: "GET", url: `${s.url}/x`, headers: {}, timeoutMs: 2_000 });
    assert.equal(res.status, 204);
    assert.equal(res.body, "");
    assert.equal(s.seen.connections, 3);
    assert.match(s.seen.requests[2] as string, /^GET \/x HTTP\/1\.1\r\nhost: [^\r]+\r\n\r\n$/);
    await t.close();
  });

  test("a connection the server closed while idle is dropped, and the next request goes on a new one", async () => {
    // The server closes each connection right after its first answer, as one whose keep-alive
    // timeout passed would: the second request finds the connection gone.
    let serverClosed: Promise<unknown> = Promise.resolve();
    const s = await scripted((_i, _raw, socket) => {
      serverClosed = once(socket, "close");
      socket.end(ok("{}"));
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1 });
    await t.send(post(`${s.url}/x`, "first"));
    await serverClosed;
    // A few turns of the event loop, each polling sockets: the client reads the server's FIN.
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    const res = await t.send(post(`${s.url}/x`, "second"));
    assert.equal(res.status, 200);
    assert.equal(s.seen.requests.filter((r) => r.endsWith("second")).length, 1);
    assert.equal(s.seen.connections, 2);
    await t.close();
  });

  test("a reused connection reset before any answer is an error, and the request is not resent by the transport", async () => {
    // First request answered; then every request is met by a reset without an answer.
    const s = await scripted((i, _raw, socket) => {
      if (i === 0) return ok("{}");
      socket.resetAndDestroy();
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1 });
    await t.send(post(`${s.url}/x`));
    await assert.rejects(t.send(post(`${s.url}/x`, "again")), (err: Error & { code?: string }) => {
      assert.equal(err.code, "ECONNRESET");
      return true;
    });
    // Resending is the retry policy's decision (it counts attempts), not the transport's.
    assert.equal(s.seen.requests.filter((r) => r.endsWith("again")).length, 1);
    await t.close();
  });

  test("a connection dropped in the middle of an answer fails the request without resending it", async () => {
    const s = await scripted((_i, _raw, socket) => {
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial');
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport();
    await assert.rejects(t.send(post(`${s.url}/x`)), /middle of an answer/);
    assert.equal(s.seen.requests.length, 1);
    await t.close();
  });

  test("honours the server's Keep-Alive timeout: a connection idle past it is not reused", async () => {
    const s = await scripted(() => ok("{}", "keep-alive: timeout=1\r\n"));
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1 });
    await t.send(post(`${s.url}/x`));
    await new Promise((r) => setTimeout(r, 20));
    // timeout=1 (s) less a second of margin: not reused, even 20 ms later.
    await t.send(post(`${s.url}/x`));
    assert.equal(s.seen.connections, 2);
    await t.close();
  });

  test("a connection idle past staleCheckMs is checked first: one the server closed unseen (a Lambda freeze) is replaced, the request sent once", async () => {
    let serverSide: net.Socket | undefined;
    const s = await scripted((_i, _raw, socket) => {
      serverSide = socket;
      return ok("{}");
    });
    cleanups.push(s.stop);
    const closedUnseen = async (staleCheckMs: number) => {
      const t = createWireTransport({ connections: 1, staleCheckMs });
      await t.send(post(`${s.url}/x`, "first"));
      // The server closes the idle connection and the request follows in the same turn of the
      // event loop, before this process can read the close: as after a thaw.
      serverSide?.destroy();
      const sent = t.send(post(`${s.url}/x`, "second"));
      return { t, sent };
    };

    const checked = await closedUnseen(0);
    assert.equal((await checked.sent).status, 200);
    assert.equal(s.seen.requests.filter((r) => r.endsWith("second")).length, 1);
    assert.equal(s.seen.connections, 2);
    await checked.t.close();

    // Idle for less than staleCheckMs, the connection is written on at once: the request fails
    // and resending is the retry policy's decision (test/lib/stripe/submitters.test.ts).
    const unchecked = await closedUnseen(60_000);
    await assert.rejects(unchecked.sent, (err: Error & { code?: string }) => {
      assert.match(err.code ?? "", /ECONNRESET|EPIPE/);
      return true;
    });
    await unchecked.t.close();
  });

  test("a request that times out while its connection is checked leaves the connection for the next one", async () => {
    const s = await scripted(() => ok("{}"));
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1, staleCheckMs: 0 });
    await t.send(post(`${s.url}/x`, "first"));
    // Its 1 ms timer is due before the check's second turn (the thread is held 5 ms), so it
    // fires first: nothing is written for it.
    const late = t.send(post(`${s.url}/x`, "late", 0));
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    await assert.rejects(late, /timed out|timeout/i);
    assert.equal((await t.send(post(`${s.url}/x`, "third"))).status, 200);
    assert.equal(s.seen.connections, 1);
    assert.deepEqual(
      s.seen.requests.map((r) => r.slice(r.lastIndexOf("\n") + 1)),
      ["first", "third"],
    );
    await t.close();
  });

  test("a connection back from its check after close() is closed, not kept", async () => {
    let serverSide: net.Socket | undefined;
    const s = await scripted((_i, _raw, socket) => {
      serverSide = socket;
      return ok("{}");
    });
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1, staleCheckMs: 0 });
    await t.send(post(`${s.url}/x`, "first"));
    const late = t.send(post(`${s.url}/x`, "late", 0));
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    await assert.rejects(late, /timed out|timeout/i);
    // Nothing is in flight, so close() ends before the check's second turn gives the
    // connection back.
    await t.close();
    await once(serverSide as net.Socket, "close", { signal: AbortSignal.timeout(2_000) });
  });

  test("a connection idle past idleTimeoutMs is not reused, Keep-Alive header or not (a Lambda thawed after a long freeze)", async () => {
    const s = await scripted(() => ok("{}"));
    cleanups.push(s.stop);
    // Wide margins both ways: a stalled machine must neither age the fresh one nor spare the old one.
    const t = createWireTransport({ connections: 1, idleTimeoutMs: 400 });
    await t.send(post(`${s.url}/x`));
    await t.send(post(`${s.url}/x`));
    assert.equal(s.seen.connections, 1, "reused while fresh");
    // The clock runs on while Lambda freezes the process, so a connection idle across a long
    // freeze is past its limit when the process thaws, whatever the server did meanwhile.
    await new Promise((r) => setTimeout(r, 500));
    await t.send(post(`${s.url}/x`));
    assert.equal(s.seen.connections, 2);
    await t.close();
  });

  test("malformed answers are errors with code HPE_INVALID", async () => {
    const answers = [
      "HTTP/2 200\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
    ];
    const s = await scripted((i) => answers[i]);
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 1 });
    for (const a of answers) {
      await assert.rejects(
        t.send(post(`${s.url}/x`)),
        (err: Error & { code?: string }) => err.code === "HPE_INVALID",
        JSON.stringify(a),
      );
    }
    await t.close();
  });

  test("refuses a header value that would split the request, before sending anything", async () => {
    const s = await scripted(() => ok("{}"));
    cleanups.push(s.stop);
    const t = createWireTransport();
    const req = { ...post(`${s.url}/x`), headers: { "x-evil": "a\r\nx-injected: 1" } };
    await assert.rejects(t.send(req), /invalid header "x-evil"/);
    assert.equal(s.seen.requests.length, 0);
    await t.close();
  });

  test("never opens more than `connections`; the rest wait in order and all are answered", async () => {
    const s = await scripted((_i, raw, socket) => {
      setTimeout(() => socket.write(ok(JSON.stringify(raw.slice(raw.indexOf("\r\n\r\n") + 4)))), 10);
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport({ connections: 2 });
    const bodies = Array.from({ length: 10 }, (_, i) => `n${i}`);
    const answers = await Promise.all(bodies.map((b) => t.send(post(`${s.url}/x`, b))));
    assert.deepEqual(
      answers.map((a) => JSON.parse(a.body)),
      bodies,
    );
    assert.equal(s.seen.connections, 2);
    await t.close();
  });

  test("close() waits for requests in flight, then closes the connections", async () => {
    const s = await scripted((_i, _raw, socket) => {
      setTimeout(() => socket.write(ok("{}")), 50);
      return undefined;
    });
    cleanups.push(s.stop);
    const t = createWireTransport();
    const pending = t.send(post(`${s.url}/x`));
    // Two callers closing at once both see it closed.
    await Promise.all([t.close(), t.close()]);
    assert.equal((await pending).status, 200);
    await assert.rejects(t.send(post(`${s.url}/x`)), /transport closed/);
  });

  test("a TLS handshake that never completes fails at the connect timeout, not the request's", async () => {
    // A TCP server that accepts and says nothing: the handshake waits forever.
    const s = await scripted(() => undefined);
    cleanups.push(s.stop);
    const t = createWireTransport({ connectTimeoutMs: 100 });
    // The request's own deadline would be a TimeoutError; the connect timeout is ETIMEDOUT.
    await assert.rejects(
      t.send(post(s.url.replace("http:", "https:"), "{}", 5_000)),
      (err: Error & { code?: string; name?: string }) => err.code === "ETIMEDOUT" && err.name !== "TimeoutError",
    );
    await t.close();
  });

  test("speaks HTTPS, checking the server's certificate against the CA it is given", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wire-tls-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"],
        ...["-addext", "subjectAltName=DNS:localhost", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")],
      ],
      { stdio: "ignore" },
    );
    const cert = readFileSync(join(dir, "cert.pem"));
    let connections = 0;
    const server = createHttpsServer({ key: readFileSync(join(dir, "key.pem")), cert }, (req, res) => {
      req.resume();
      req.on("end", () => res.end(JSON.stringify({ secure: true, path: req.url })));
    });
    server.on("secureConnection", () => connections++);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    cleanups.push(() => {
      server.closeAllConnections();
      server.close();
    });
    const url = `https://localhost:${(server.address() as AddressInfo).port}/v1/x`;

    const t = createWireTransport({ tls: { ca: cert } });
    assert.deepEqual(JSON.parse((await t.send(post(url))).body), { secure: true, path: "/v1/x" });
    await t.send(post(url));
    assert.equal(connections, 1, "the TLS connection is kept alive");
    await t.close();

    // Without the CA, the self-signed certificate is refused.
    const untrusted = createWireTransport();
    await assert.rejects(untrusted.send(post(url)), (err: Error & { code?: string }) =>
      /SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO/.test(err.code ?? ""),
    );
    await untrusted.close();
  });
});
