/**
 * What every AWS SDK client of meterhook is made with. The SDK bounds no call by default (its
 * sockets idle out after 15 minutes): a call that never answers, such as one from a function in a
 * VPC with no route to the service, would hold the invocation until the function's timeout, with
 * only "Task timed out" in the log. Bounded, it fails as a `TimeoutError`, which the SDK retries
 * (3 attempts) and the caller then handles as any AWS failure: a retry, a 503, a stopped replay.
 */
export interface AwsClientTarget {
  region: string;
  /** Another endpoint (the local runtime, tests): given placeholder credentials. */
  endpoint?: string;
  /** Each HTTP request's bound, connecting included (METERHOOK_AWS_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
}

/** METERHOOK_AWS_REQUEST_TIMEOUT_MS's default: AWS answers these calls in milliseconds. */
export const DEFAULT_AWS_REQUEST_TIMEOUT_MS = 5_000;
/** Connecting takes a round trip or two; a route that is missing never connects. */
const CONNECTION_TIMEOUT_MS = 3_000;

export const awsClientConfig = ({
  region,
  endpoint,
  requestTimeoutMs = DEFAULT_AWS_REQUEST_TIMEOUT_MS,
}: AwsClientTarget) => ({
  region,
  requestHandler: {
    connectionTimeout: Math.min(CONNECTION_TIMEOUT_MS, requestTimeoutMs),
    requestTimeout: requestTimeoutMs,
    // Without it the SDK only logs a warning when the request timeout passes, and goes on waiting.
    throwOnRequestTimeout: true,
  },
  ...(endpoint ? { endpoint, credentials: { accessKeyId: "local", secretAccessKey: "local" } } : {}),
});
