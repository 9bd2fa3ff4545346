import type { AddressInfo } from "node:net";
import { createServer, type Socket } from "node:net";

export interface SilentServer {
  /** An http:// endpoint on loopback, for SQS_ENDPOINT, DYNAMODB_ENDPOINT, SSM_ENDPOINT... */
  endpoint: string;
  /** Connections accepted so far: the client did reach it. */
  connections(): number;
  stop(): Promise<void>;
}

/**
 * A loopback server that takes connections and never answers, as an AWS endpoint behind a
 * half-open connection or a broken route does: what a call without a timeout waits on forever.
 */
export async function startSilentServer(): Promise<SilentServer> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => accepted,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
