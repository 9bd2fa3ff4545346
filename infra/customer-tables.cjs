// The consumer's and replay's read access to the DynamoDB tables the mapping config's `dynamodb`
// customer lookups name, read from the config itself at package time: the policy cannot drift
// from the config, and a stack without such lookups gets no DynamoDB access at all.
const { customerSettings } = require("./mapping-config.cjs");

/** The `dynamodb` lookups' tables: [{ tableName, region }], region "${AWS::Region}" for the stack's. */
async function customerTables(file) {
  const tables = new Map();
  for (const c of await customerSettings(file)) {
    if (c?.lookup !== "dynamodb" || typeof c.tableName !== "string") continue;
    const region = typeof c.region === "string" ? c.region : `\${AWS::Region}`; // Fn::Sub's, below
    tables.set(`${region}/${c.tableName}`, { tableName: c.tableName, region });
  }
  return [...tables.values()];
}

module.exports = async ({ resolveVariable }) => {
  const tables = await customerTables(await resolveVariable("param:mappingConfig"));
  if (tables.length === 0) return { Resources: {} };
  return {
    Resources: {
      CustomerTablesReadPolicy: {
        Type: "AWS::IAM::Policy",
        Properties: {
          PolicyName: "meterhook-customer-tables",
          Roles: [{ Ref: "IngestQueueRole" }, { Ref: "DlqReplayRole" }],
          PolicyDocument: {
            Version: "2012-10-17",
            Statement: [
              {
                Effect: "Allow",
                Action: "dynamodb:GetItem",
                Resource: tables.map((t) => ({
                  "Fn::Sub": `arn:\${AWS::Partition}:dynamodb:${t.region}:\${AWS::AccountId}:table/${t.tableName}`,
                })),
              },
            ],
          },
        },
      },
    },
  };
};
