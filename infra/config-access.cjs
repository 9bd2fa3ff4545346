// Read access to the secrets and tables the functions read, taken at package time from the
// stage's params and mapping config, so the policies cannot drift from them:
// - `stripeKey`, `apiKeys` and `stripeEventsSecret`: the statement, in the roles' own policies
//   (infra/iam.yml), that reads the Stripe key (consumer, replay, stripe-reports), the API keys
//   (HTTP API) or a Stripe event destination's signing secret (stripe-reports) from SSM, or from
//   Secrets Manager when the stripeKeySecretId / apiKeysSecretId / stripeEventsSecretId param is set;
// - `resources`: policies of their own, when there is anything to allow (a stack that needs none
//   gets none):
//   - the consumer and replay: the DynamoDB tables of `dynamodb` customer lookups, and the SSM
//     parameters and Secrets Manager secrets of `http` lookups' header secrets;
//   - the HTTP API: webhook sources' secrets and Verify Tokens in SSM or Secrets Manager (those
//     under the stage's webhookSecretsPath it may read already, by infra/iam.yml);
//   - every function that reads a secret: kms:Decrypt, through SSM and Secrets Manager only, on
//     the customer-managed KMS keys of the secretsKmsKeyArns param.
// The functions are made to wait for these policies (infra/build-plugin.cjs), so none runs
// before it may read what it needs.
const { secretRefs, sourcesOf } = require("./mapping-config.cjs");

/** An ARN in this account, for Fn::Sub: in the stack's region unless `region` names another. */
const arn = (service, rest, region) => ({
  "Fn::Sub": `arn:\${AWS::Partition}:${service}:${region ?? `\${AWS::Region}`}:\${AWS::AccountId}:${rest}`,
});

/** The SSM parameters and Secrets Manager secrets `refs` name, as IAM statements. */
function secretStatements(refs) {
  const ssm = new Set();
  const secrets = new Set();
  for (const r of refs) {
    if (typeof r?.ssm === "string") ssm.add(r.ssm);
    if (typeof r?.secretsManager === "string") secrets.add(r.secretsManager);
  }
  const out = [];
  if (ssm.size > 0)
    out.push({
      Effect: "Allow",
      Action: "ssm:GetParameter",
      Resource: [...ssm].map((n) => arn("ssm", `parameter${n}`)),
    });
  if (secrets.size > 0) {
    out.push({
      Effect: "Allow",
      Action: "secretsmanager:GetSecretValue",
      // A name gets the 6 characters Secrets Manager appends to its ARN; an ARN is used as it is.
      Resource: [...secrets].map((id) => (id.startsWith("arn:") ? id : arn("secretsmanager", `secret:${id}-??????`))),
    });
  }
  return out;
}

/** One inline policy for `roles`, or nothing when it would allow nothing. */
function policy(resource, name, roles, statements) {
  if (statements.length === 0) return {};
  return {
    [resource]: {
      Type: "AWS::IAM::Policy",
      Properties: {
        PolicyName: name,
        Roles: roles.map((r) => ({ Ref: r })),
        PolicyDocument: { Version: "2012-10-17", Statement: statements },
      },
    },
  };
}

/** The KMS keys of the secretsKmsKeyArns param (comma-separated key ARNs). */
function kmsKeys(param) {
  const arns = String(param ?? "")
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean);
  for (const a of arns) {
    // IAM matches kms:Decrypt on the key's ARN: an alias or a key id would allow nothing.
    if (!/^arn:aws[\w-]*:kms:[a-z0-9-]+:\d{12}:key\/[\w-]+$/.test(a))
      throw new Error(`secretsKmsKeyArns: ${a} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)`);
  }
  return arns;
}

/** The roles that read a secret: every function's but the EventBridge function's. */
const SECRET_READERS = ["HttpApiRole", "IngestQueueRole", "DlqReplayRole", "StripeReportsRole"];

/** The one statement that reads a key kept in SSM (`ssmParam`) or, when `secretParam` is set, Secrets Manager. */
const keyRead = (ssmParam, secretParam) =>
  async function keyStatement({ resolveVariable }) {
    const secretId = await resolveVariable(`param:${secretParam}`);
    const ref = secretId ? { secretsManager: secretId } : { ssm: await resolveVariable(`param:${ssmParam}`) };
    return secretStatements([ref])[0];
  };

async function resources({ resolveVariable }) {
  const sources = await sourcesOf(await resolveVariable("param:mappingConfig"));
  const tables = new Map();
  for (const { customer: c } of sources) {
    if (c?.lookup === "dynamodb" && typeof c.tableName === "string")
      tables.set(`${c.region ?? ""}/${c.tableName}`, arn("dynamodb", `table/${c.tableName}`, c.region));
  }
  const secrets = secretRefs(sources);
  const lookups = [...secretStatements(secrets.lookups)];
  if (tables.size > 0) lookups.unshift({ Effect: "Allow", Action: "dynamodb:GetItem", Resource: [...tables.values()] });
  const keys = kmsKeys(await resolveVariable("param:secretsKmsKeyArns"));
  const decrypt =
    keys.length === 0
      ? []
      : [
          {
            Effect: "Allow",
            Action: "kms:Decrypt",
            Resource: keys,
            Condition: { StringLike: { "kms:ViaService": ["ssm.*.amazonaws.com", "secretsmanager.*.amazonaws.com"] } },
          },
        ];
  return {
    Resources: {
      ...policy(
        "CustomerLookupsReadPolicy",
        "meterhook-customer-lookups",
        ["IngestQueueRole", "DlqReplayRole"],
        lookups,
      ),
      ...policy(
        "WebhookSecretsReadPolicy",
        "meterhook-webhook-secrets",
        ["HttpApiRole"],
        secretStatements(secrets.webhooks),
      ),
      ...policy("SecretsKmsDecryptPolicy", "meterhook-secrets-kms", SECRET_READERS, decrypt),
    },
  };
}

module.exports = {
  resources,
  stripeKey: keyRead("stripeKeyParameter", "stripeKeySecretId"),
  apiKeys: keyRead("apiKeysParameter", "apiKeysSecretId"),
  stripeEventsSecret: keyRead("stripeEventsSecretParameter", "stripeEventsSecretId"),
};
