import { awsClientConfig } from "./aws-clients.js";
import type { SecretReader } from "./secrets.js";

/**
 * Reads secrets with Powertools Parameters (SSM SecureString with decryption, or Secrets Manager).
 * Imported lazily: only cold starts that need a secret pay for loading the SDK clients.
 * `endpoints` points the clients elsewhere (tests); on Lambda they use the region's endpoints.
 */
export function createAwsSecretReader(options: {
  region: string;
  ssmEndpoint?: string;
  secretsManagerEndpoint?: string;
  requestTimeoutMs?: number;
}): SecretReader {
  const clientConfig = (endpoint: string | undefined) =>
    awsClientConfig({ region: options.region, endpoint, requestTimeoutMs: options.requestTimeoutMs });
  return async (source) => {
    if (source.store === "ssm") {
      const { SSMProvider } = await import("@aws-lambda-powertools/parameters/ssm");
      const provider = new SSMProvider({
        clientConfig: clientConfig(options.ssmEndpoint),
      });
      const value = await provider.get(source.name, { decrypt: true, maxAge: 3600 });
      if (typeof value !== "string") throw new Error("parameter has no string value");
      return value;
    }
    const { SecretsProvider } = await import("@aws-lambda-powertools/parameters/secrets");
    const provider = new SecretsProvider({
      clientConfig: clientConfig(options.secretsManagerEndpoint),
    });
    const value = await provider.get(source.name, { maxAge: 3600 });
    if (typeof value !== "string") throw new Error("secret has no string value");
    // The console stores key/value pairs as a JSON object by default: sent as a key, Stripe or a
    // webhook sender would refuse it on every event, so say so once, at start-up.
    if (isJsonObject(value))
      throw new Error("the secret holds JSON key/value pairs; store the key alone as its plaintext value");
    return value;
  };
}

function isJsonObject(text: string): boolean {
  if (!text.trimStart().startsWith("{")) return false;
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null;
  } catch {
    return false;
  }
}
