// Read access to what the stage's mapping config makes the functions read, taken from the config
// itself at package time, so the policies cannot drift from it; a stack whose config names none
// of these gets no such access at all:
// - the consumer and replay: the DynamoDB tables of `dynamodb` customer lookups, and the SSM
//   parameters and Secrets Manager secrets of `http` lookups' header secrets;
// - the HTTP API: webhook sources' secrets and Verify Tokens in SSM or Secrets Manager (those
//   under the stage's webhookSecretsPath it may read already, by infra/iam.yml).
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

module.exports = async ({ resolveVariable }) => {
  const sources = await sourcesOf(await resolveVariable("param:mappingConfig"));
  const tables = new Map();
  for (const { customer: c } of sources) {
    if (c?.lookup === "dynamodb" && typeof c.tableName === "string")
      tables.set(`${c.region ?? ""}/${c.tableName}`, arn("dynamodb", `table/${c.tableName}`, c.region));
  }
  const secrets = secretRefs(sources);
  const lookups = [...secretStatements(secrets.lookups)];
  if (tables.size > 0) lookups.unshift({ Effect: "Allow", Action: "dynamodb:GetItem", Resource: [...tables.values()] });
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
    },
  };
};
