// What `npm start` listens on unless told otherwise, and the URLs that reach it: the local
// runtime starts on these, and the CLI sends to them by default. Kept free of the emulators'
// imports, so the CLI loads none of them.

/** `npm start`'s default ports (PORT, SQS_PORT, STRIPE_EMULATOR_PORT, DYNAMODB_PORT). */
export const LOCAL_PORTS = { gateway: 3000, sqs: 4566, stripeEmulator: 12111, dynamodb: 8000 } as const;

export const INGEST_QUEUE = "meterhook-ingest";
export const DEAD_LETTER_QUEUE = "meterhook-dlq";

export const localGatewayUrl = `http://127.0.0.1:${LOCAL_PORTS.gateway}`;
export const localSqsEndpoint = (port: number = LOCAL_PORTS.sqs) => `http://127.0.0.1:${port}`;
/** The URL fauxqs gives a queue of the local runtime: its region, a fixed account, the port it listens on. */
export const localQueueUrl = (name: string, port: number = LOCAL_PORTS.sqs) =>
  `http://sqs.us-east-1.localhost:${port}/000000000000/${name}`;
