import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A loopback stand-in for SSM Parameter Store and Secrets Manager, speaking their JSON protocol
 * (AmazonSSM.GetParameter, secretsmanager.GetSecretValue) to the real AWS SDK clients. No emulator
 * for these services runs here, and meterhook only ever reads one value from each.
 */
export async function startFakeSecretStores(values: {
  ssm?: Record<string, string>;
  secrets?: Record<string, string>;
}) {
  const calls: Array<{ target: string; name: string; decrypt?: boolean }> = [];
  const server = createServer(async (req, res) => {
    let raw = "";
    for await (const c of req) raw += c;
    const target = String(req.headers["x-amz-target"] ?? "");
    const body = JSON.parse(raw || "{}");
    const reply = (status: number, payload: unknown) => {
      res.writeHead(status, { "content-type": "application/x-amz-json-1.1" });
      res.end(JSON.stringify(payload));
    };
    if (target === "AmazonSSM.GetParameter") {
      calls.push({ target, name: body.Name, decrypt: body.WithDecryption });
      const value = values.ssm?.[body.Name];
      if (value === undefined)
        return reply(400, { __type: "ParameterNotFound", message: `Parameter ${body.Name} not found.` });
      return reply(200, { Parameter: { Name: body.Name, Type: "SecureString", Value: value, Version: 1 } });
    }
    if (target === "secretsmanager.GetSecretValue") {
      calls.push({ target, name: body.SecretId });
      const value = values.secrets?.[body.SecretId];
      if (value === undefined)
        return reply(400, {
          __type: "ResourceNotFoundException",
          message: "Secrets Manager can't find the specified secret.",
        });
      return reply(200, {
        ARN: `arn:aws:secretsmanager:us-east-1:0:secret:${body.SecretId}`,
        Name: body.SecretId,
        SecretString: value,
        VersionId: "v1",
      });
    }
    reply(400, { __type: "UnknownOperationException", message: target });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}
