import net from "node:net";
import tls from "node:tls";
import {
  HEADER_NAME,
  HEADER_VALUE,
  type HttpRequest,
  type HttpResponse,
  type HttpTransport,
  MAX_RESPONSE_BYTES,
  perUrl,
  RequestTimeoutError,
} from "./transport.js";

/**
 * A keep-alive HTTP/1.1 client for the few request shapes meterhook sends (a short POST or GET,
 * one request per connection at a time), written on `node:net` and `node:tls`.
 *
 * Why not undici: against the same loopback emulator at 20 ms, undici's `dispatch` spends about
 * 70 µs of CPU per v1 request and this client about 50 (`npm run bench:v1-layers`, bench/HISTORY.md);
 * v1 sends one request per event, so that difference is most of the pipeline's v1 cost. undici
 * stays available (`STRIPE_HTTP_CLIENT=undici`) and is used for HTTP/1.1 pipelining.
 *
 * What it does: connection reuse per origin up to `connections`, requests queued beyond that;
 * one deadline per request over queueing, connecting, sending and receiving; responses framed by
 * Content-Length, chunked transfer coding or the connection's end; 1xx answers skipped; a
 * connection the server closes while idle is dropped at once, one idle past the server's
 * Keep-Alive timeout (or `idleTimeoutMs`) is not reused, and one idle for `staleCheckMs` or more
 * is checked for a close first (after a Lambda freeze, see checkThenWrite). Like undici, it
 * never resends on its own: a connection lost under a request is an error, and the Stripe
 * client's retry policy decides (with the same Idempotency-Key), so STRIPE_MAX_ATTEMPTS counts
 * every send.
 *
 * What it leaves out, because meterhook's requests do not need it: proxies (neither this nor
 * undici's Agent reads HTTPS_PROXY), redirects, pipelining, compression, HTTP/2.
 */

/** Response headers larger than this are refused (Node's http server uses 16 KiB). */
const MAX_HEADER_BYTES = 64 * 1024;
/** Idle connections are not reused past this (or past the server's Keep-Alive timeout less 1 s). */
const DEFAULT_IDLE_MS = 30_000;
/** A connection idle this long is checked for a close the process could not see before reuse. */
const DEFAULT_STALE_CHECK_MS = 1_000;
const CRLFCRLF = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");
const NON_ASCII = /[^\x00-\x7f]/;

/** A network failure, named by `code` as Node's socket errors are. */
class WireError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = "WireError";
  }
}

export interface WireOptions {
  /** Connections per origin (default 32); requests beyond wait in order. */
  connections?: number;
  connectTimeoutMs?: number;
  /** Longest a connection is kept idle for reuse. */
  idleTimeoutMs?: number;
  /**
   * A connection idle at least this long (default 1 s) waits two turns of the event loop before
   * it carries a request, so that a close the server sent meanwhile is seen first (Origin.dispatch).
   */
  staleCheckMs?: number;
  /** Extra TLS options (a test's CA); the host name is always checked. */
  tls?: tls.ConnectionOptions;
}

type Framing = "length" | "chunked" | "close";

/** One request from `send` until it settles. */
class Exchange {
  private timer: NodeJS.Timeout;
  settled = false;
  /** The connection it was written to; undefined while queued. */
  conn: Connection | undefined;
  /** Waiting in its origin's queue for a connection. */
  queued = false;

  constructor(
    readonly origin: Origin,
    readonly text: string,
    readonly encoding: BufferEncoding,
    readonly method: string,
    readonly timeoutMs: number,
    private readonly resolve: (res: HttpResponse) => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.timer = setTimeout(expire, timeoutMs, this);
  }

  expire(): void {
    const conn = this.conn;
    this.fail(new RequestTimeoutError(this.timeoutMs));
    // Half an answer may still come: the connection cannot carry another request.
    conn?.destroy();
  }

  fail(err: Error): void {
    if (this.settle()) this.reject(err);
  }

  succeed(res: HttpResponse): void {
    if (this.settle()) this.resolve(res);
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    this.origin.done(this);
    return true;
  }
}
const expire = (e: Exchange) => e.expire();

/** One keep-alive connection and the parser of the answer it is reading. */
class Connection {
  readonly socket: net.Socket;
  current: Exchange | undefined;
  idleSince = 0;
  idleLimitMs: number;
  private error: Error | undefined;
  // The answer being read.
  private buf: Buffer | undefined;
  private received = 0;
  private status = 0;
  private headers: Record<string, string> = {};
  private framing: Framing = "length";
  private remaining = 0;
  private inBody = false;
  private chunks: Buffer[] = [];
  private bodyBytes = 0;
  private keepAlive = true;
  private trailers = false;
  private crlfDue = false;

  constructor(
    private readonly origin: Origin,
    connectTimeoutMs: number,
  ) {
    this.idleLimitMs = origin.idleTimeoutMs;
    const o = origin.target;
    const socket = o.secure
      ? tls.connect({
          ...origin.tlsOptions,
          host: o.host,
          port: o.port,
          servername: net.isIP(o.host) ? undefined : o.host,
          ALPNProtocols: ["http/1.1"],
          session: origin.tlsSession,
        })
      : net.connect({ host: o.host, port: o.port });
    this.socket = socket;
    socket.setNoDelay(true);
    const connectTimer = setTimeout(
      () => socket.destroy(new WireError(`no connection within ${connectTimeoutMs} ms`, "ETIMEDOUT")),
      connectTimeoutMs,
    );
    socket.once(o.secure ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
    if (o.secure) socket.on("session", (s: Buffer) => origin.keepSession(s));
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err: Error) => {
      this.error ??= err;
    });
    socket.on("close", () => {
      clearTimeout(connectTimer);
      this.onClose();
    });
  }

  /** Writes a request; the connection is idle and open. */
  write(x: Exchange): void {
    this.current = x;
    x.conn = this;
    this.received = 0;
    this.socket.write(x.text, x.encoding);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Open both ways, as far as this process has seen. */
  get usable(): boolean {
    return !this.socket.destroyed && !this.socket.readableEnded && this.socket.writable;
  }

  private fail(err: Error): void {
    const x = this.current;
    this.current = undefined;
    this.socket.destroy();
    x?.fail(err);
  }

  private onClose(): void {
    const x = this.current;
    this.current = undefined;
    this.origin.lost(this);
    if (!x || x.settled) return;
    if (this.inBody && this.framing === "close") {
      this.finish(x);
      return;
    }
    x.fail(
      this.error ??
        new WireError(
          this.received === 0 ? "connection closed before an answer" : "connection closed in the middle of an answer",
          "ECONNRESET",
        ),
    );
  }

  private onData(chunk: Buffer): void {
    const x = this.current;
    if (!x || x.settled) {
      // Bytes nobody asked for, or the rest of an answer already given up on.
      this.socket.destroy();
      return;
    }
    this.received += chunk.length;
    let buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = undefined;
    for (;;) {
      if (!this.inBody) {
        const end = buf.indexOf(CRLFCRLF);
        if (end < 0) {
          if (buf.length > MAX_HEADER_BYTES) {
            this.fail(protocolError("response headers too large"));
            return;
          }
          this.buf = buf;
          return;
        }
        const problem = this.readHead(buf.toString("latin1", 0, end), x.method);
        if (problem) {
          this.fail(protocolError(problem));
          return;
        }
        buf = buf.subarray(end + 4);
        if (this.status < 200) continue; // 1xx: the answer follows
        this.inBody = true;
        if (this.framing === "length" && this.remaining === 0) {
          this.finish(x, buf);
          return;
        }
      }
      if (this.framing === "length" || this.framing === "close") {
        const take = this.framing === "close" ? buf.length : Math.min(this.remaining, buf.length);
        if (take > 0 && !this.keep(buf.subarray(0, take))) return;
        this.remaining -= take;
        if (this.framing === "close" || this.remaining > 0) return;
        this.finish(x, buf.subarray(take));
        return;
      }
      // Chunked: `remaining` is what is left of the current chunk's data, then its CRLF.
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, buf.length);
        if (!this.keep(buf.subarray(0, take))) return;
        this.remaining -= take;
        buf = buf.subarray(take);
        if (this.remaining > 0) return;
        this.crlfDue = true;
      }
      if (this.crlfDue) {
        if (buf.length < 2) {
          if (buf.length > 0) this.buf = buf;
          return;
        }
        if (buf[0] !== 0x0d || buf[1] !== 0x0a) {
          this.fail(protocolError("chunk not followed by CRLF"));
          return;
        }
        buf = buf.subarray(2);
        this.crlfDue = false;
      }
      const eol = buf.indexOf(CRLF);
      if (eol < 0) {
        if (buf.length > 1024) {
          this.fail(protocolError("chunk size line too long"));
          return;
        }
        this.buf = buf;
        return;
      }
      if (this.trailers) {
        // Trailer lines until an empty one; their contents are not used.
        buf = buf.subarray(eol + 2);
        if (eol === 0) {
          this.finish(x, buf);
          return;
        }
        continue;
      }
      const line = buf.toString("latin1", 0, eol);
      const size = Number.parseInt(line, 16);
      if (!/^[0-9a-fA-F]+(;.*)?\s*$/.test(line) || !Number.isSafeInteger(size)) {
        this.fail(protocolError("malformed chunk size"));
        return;
      }
      buf = buf.subarray(eol + 2);
      if (size === 0) this.trailers = true;
      else this.remaining = size;
    }
  }

  /** Keeps body bytes; false (and the request failed) past the size limit. */
  private keep(data: Buffer): boolean {
    this.bodyBytes += data.length;
    if (this.bodyBytes > MAX_RESPONSE_BYTES) {
      this.fail(new Error(`response body larger than ${MAX_RESPONSE_BYTES} bytes`));
      return false;
    }
    this.chunks.push(data);
    return true;
  }

  /** Reads a status line and headers; a description of what is wrong, or undefined. */
  private readHead(head: string, method: string): string | undefined {
    const lines = head.split("\r\n");
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0] as string);
    if (!m) return "malformed status line";
    this.status = Number(m[2]);
    const headers: Record<string, string> = {};
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string;
      const colon = line.indexOf(":");
      if (colon <= 0) return "malformed header line";
      const name = line.slice(0, colon).toLowerCase();
      if (!HEADER_NAME.test(name)) return "malformed header name";
      const value = line.slice(colon + 1).trim();
      const had = headers[name];
      headers[name] = had === undefined ? value : `${had}, ${value}`;
    }
    if (this.status < 200) return undefined;
    this.headers = headers;
    const connection = headers.connection?.toLowerCase() ?? "";
    this.keepAlive = m[1] === "1" ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
    const hint = /\btimeout=(\d+)/.exec(headers["keep-alive"] ?? "");
    if (hint) this.idleLimitMs = Math.min(this.origin.idleTimeoutMs, Math.max(0, Number(hint[1]) * 1000 - 1000));
    const te = headers["transfer-encoding"];
    const cl = headers["content-length"];
    this.trailers = false;
    this.crlfDue = false;
    if (method === "HEAD" || this.status === 204 || this.status === 304) {
      this.framing = "length";
      this.remaining = 0;
    } else if (te !== undefined) {
      if (!/(^|,)\s*chunked\s*$/i.test(te)) return "unsupported transfer coding";
      this.framing = "chunked";
      this.remaining = 0;
      this.keepAlive &&= cl === undefined;
    } else if (cl !== undefined) {
      // Repeated Content-Length headers were joined above; they must agree.
      const values = cl.split(",").map((v) => v.trim());
      if (!values.every((v) => /^\d{1,15}$/.test(v) && v === values[0])) return "malformed Content-Length";
      this.framing = "length";
      this.remaining = Number(values[0]);
      if (this.remaining > MAX_RESPONSE_BYTES) return `response body larger than ${MAX_RESPONSE_BYTES} bytes`;
    } else {
      this.framing = "close";
      this.keepAlive = false;
    }
    return undefined;
  }

  /**
   * The answer is whole. `rest` is what came after it, which no request of ours asked for: the
   * connection is then not reused. (An answer ended by the connection's close is never reused.)
   */
  private finish(x: Exchange, rest?: Buffer): void {
    const chunks = this.chunks;
    const body = (chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)).toString("utf8");
    const res = { status: this.status, headers: this.headers, body };
    const reusable = this.keepAlive && (rest === undefined || rest.length === 0);
    this.current = undefined;
    this.inBody = false;
    this.chunks = [];
    this.bodyBytes = 0;
    if (!reusable) this.socket.destroy();
    x.conn = undefined;
    x.succeed(res);
    if (reusable) this.origin.idle(this);
  }
}

const protocolError = (what: string) => new WireError(`invalid HTTP answer: ${what}`, "HPE_INVALID");

interface Target {
  secure: boolean;
  host: string;
  port: number;
  /** "host[:port]" for the Host header. */
  authority: string;
}

/** The connections and the queue of one scheme, host and port. */
class Origin {
  private readonly idleConns: Connection[] = [];
  private readonly queue: Exchange[] = [];
  private open = 0;
  private active = 0;
  private closed = false;
  tlsSession: Buffer | undefined;
  /** close() calls waiting for the requests in flight. */
  private readonly drained: Array<() => void> = [];

  constructor(
    readonly target: Target,
    private readonly max: number,
    private readonly connectTimeoutMs: number,
    readonly idleTimeoutMs: number,
    private readonly staleCheckMs: number,
    readonly tlsOptions: tls.ConnectionOptions,
  ) {}

  keepSession(s: Buffer): void {
    this.tlsSession = s;
  }

  send(x: Exchange): void {
    this.active++;
    this.dispatch(x);
  }

  private dispatch(x: Exchange): void {
    const now = Date.now();
    for (let c = this.idleConns.pop(); c; c = this.idleConns.pop()) {
      const idleFor = now - c.idleSince;
      if (idleFor >= c.idleLimitMs) {
        c.destroy(); // idle too long: the server may be closing it
        continue;
      }
      if (idleFor >= this.staleCheckMs) this.checkThenWrite(c, x);
      else c.write(x);
      return;
    }
    if (this.open < this.max) {
      this.open++;
      new Connection(this, this.connectTimeoutMs).write(x);
      return;
    }
    x.queued = true;
    this.queue.push(x);
  }

  /** The next waiting request that has not given up, taken off the queue. */
  private next(): Exchange | undefined {
    for (let x = this.queue.shift(); x; x = this.queue.shift()) {
      x.queued = false;
      if (!x.settled) return x;
    }
    return undefined;
  }

  /**
   * Writes `x` on `c` once the process has polled its sockets: Lambda freezes a function between
   * invocations, and a close the server sent meanwhile waits unseen in the kernel until then.
   * Written on at once, such a connection would fail the request (a retry, one attempt spent).
   * Two turns of the event loop hold a poll between them.
   */
  private checkThenWrite(c: Connection, x: Exchange): void {
    setImmediate(() =>
      setImmediate(() => {
        if (x.settled) {
          if (c.usable) this.idle(c);
        } else if (c.usable) c.write(x);
        else this.dispatch(x); // closed meanwhile: its close reaches lost(), which forgets it
      }),
    );
  }

  /** A connection finished an answer and may carry the next request. */
  idle(c: Connection): void {
    const x = this.next();
    if (x) {
      c.write(x);
      return;
    }
    // After close(), a connection that comes back (from a check, see checkThenWrite) is not kept.
    if (this.closed) {
      c.destroy();
      return;
    }
    c.idleSince = Date.now();
    this.idleConns.push(c);
  }

  /** A connection closed: forget it, and open another for a waiting request. */
  lost(c: Connection): void {
    this.open--;
    const i = this.idleConns.indexOf(c);
    if (i >= 0) this.idleConns.splice(i, 1);
    const x = this.next();
    if (x) this.dispatch(x);
  }

  done(x: Exchange): void {
    if (x.queued) {
      x.queued = false;
      this.queue.splice(this.queue.indexOf(x), 1);
    }
    if (--this.active === 0) for (const r of this.drained.splice(0)) r();
  }

  /** Resolves once nothing is in flight; then closes every connection. */
  async close(): Promise<void> {
    if (this.active > 0) await new Promise<void>((r) => this.drained.push(r));
    this.closed = true;
    for (const c of this.idleConns.splice(0)) c.destroy();
  }
}

function targetOf(href: string): { target: Target; path: string } {
  const u = new URL(href);
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`unsupported URL scheme ${u.protocol}`);
  if (u.username || u.password) throw new TypeError("credentials in a URL are not supported");
  const secure = u.protocol === "https:";
  const host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
  return {
    target: { secure, host, port: Number(u.port) || (secure ? 443 : 80), authority: u.host },
    path: u.pathname + u.search,
  };
}

/**
 * The request head and body as one string (one write, one segment for a short request), and the
 * encoding to write it in: "latin1" when every character is ASCII, where it gives the same bytes
 * as UTF-8 and is a plain copy (UTF-8 encoding a v2 batch's 20 KB showed in the profile).
 */
function requestText(req: HttpRequest, authority: string, path: string): { text: string; encoding: BufferEncoding } {
  let head = `${req.method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n`;
  for (const name in req.headers) {
    const value = req.headers[name] as string;
    if (!HEADER_NAME.test(name) || !HEADER_VALUE.test(value))
      throw new TypeError(`invalid header ${JSON.stringify(name)}`);
    head += `${name}: ${value}\r\n`;
  }
  let ascii = !NON_ASCII.test(head);
  if (req.body === undefined) {
    head += req.method === "POST" ? "content-length: 0\r\n\r\n" : "\r\n";
    return { text: head, encoding: ascii ? "latin1" : "utf8" };
  }
  // UTF-8 needs more than one byte for any character past ASCII (a lone surrogate included).
  const bytes = Buffer.byteLength(req.body);
  ascii &&= bytes === req.body.length;
  return { text: `${head}content-length: ${bytes}\r\n\r\n${req.body}`, encoding: ascii ? "latin1" : "utf8" };
}

/** See the comment at the top of this file. */
export function createWireTransport(options: WireOptions = {}): HttpTransport {
  const origins = new Map<string, Origin>();
  let closing = false;
  const resolve = perUrl((href) => {
    const { target, path } = targetOf(href);
    const key = `${target.secure ? "https" : "http"}://${target.authority}`;
    let origin = origins.get(key);
    if (!origin) {
      origin = new Origin(
        target,
        options.connections ?? 32,
        options.connectTimeoutMs ?? 5_000,
        options.idleTimeoutMs ?? DEFAULT_IDLE_MS,
        options.staleCheckMs ?? DEFAULT_STALE_CHECK_MS,
        options.tls ?? {},
      );
      origins.set(key, origin);
    }
    return { origin, path };
  });
  return {
    send(req) {
      return new Promise<HttpResponse>((ok, fail) => {
        if (closing) throw new Error("transport closed");
        const { origin, path } = resolve(req.url);
        const { text, encoding } = requestText(req, origin.target.authority, path);
        origin.send(new Exchange(origin, text, encoding, req.method, req.timeoutMs, ok, fail));
      });
    },
    async close() {
      closing = true;
      await Promise.all([...origins.values()].map((o) => o.close()));
    },
  };
}
