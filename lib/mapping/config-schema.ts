import * as z from "zod";
import { HEADER_NAME, HEADER_VALUE } from "../stripe/transport.js";

/**
 * The mapping config: how each source's triggers (webhooks, EventBridge events, SQS messages in
 * the app's own shape) become meter events. Values are JMESPath expressions evaluated over
 * `{ headers, query, body, source, receivedAt }`. `npm run schema` writes the JSON Schema generated from
 * this file to schema/meterhook-config.schema.json.
 */
const Expression = z
  .string()
  .min(1)
  .describe("A JMESPath expression over { headers, query, body, source, receivedAt }");

export const SecretRefSchema = z
  .union([
    z.strictObject({ env: z.string().min(1).describe("name of an environment variable") }),
    z.strictObject({ ssm: z.string().startsWith("/").describe("name of an SSM SecureString parameter") }),
    z.strictObject({ secretsManager: z.string().min(1).describe("id or ARN of a Secrets Manager secret") }),
    z.strictObject({ value: z.string().min(1).describe("the secret itself: for local use and tests only") }),
  ])
  .describe("Where a secret comes from");
export type SecretRef = z.infer<typeof SecretRefSchema>;

const Secrets = z.array(SecretRefSchema).min(1).max(5).describe("Accepted secrets; several during a rotation");
/** A timestamp tolerance in seconds, at most a day; `seconds` unless set. */
const tolerance = (seconds: number) =>
  z.number().int().min(1).max(86_400).default(seconds).describe("Timestamp tolerance in seconds");
const Tolerance = tolerance(300);

/** A URL a sender signs, the request's own query string appended to it (Twilio's, HubSpot's). */
const QuerylessUrl = z
  .string()
  .regex(/^https?:\/\/[^/?#\s]+[^?#\s]*$/, "must be an http(s) URL without a query string or fragment");

/** The generic HMAC schemes' settings (`hmac`, and `hmac-sha256`, its first name). */
const hmacFields = (algorithm: "sha256") => ({
  secrets: Secrets,
  header: z.string().min(1).describe("header carrying the signature"),
  algorithm: z
    .enum(["sha256", "sha1", "sha512"])
    .default(algorithm)
    .describe("the HMAC's hash: sha1 for senders that still use it (Intercom, Vercel, Segment)"),
  encoding: z.enum(["hex", "base64"]).default("hex"),
  prefix: z.string().default("").describe('text before the signature, e.g. "sha256="'),
  timestampHeader: z.string().optional().describe("header with a Unix-seconds timestamp; signs '{timestamp}.{body}'"),
  url: z
    .string()
    .regex(/^https?:\/\/\S+$/, "must be an http(s) URL")
    .optional()
    .describe("the URL the sender calls, as set there, when it signs '{url}{body}' (Square)"),
  toleranceSeconds: Tolerance,
});

export const AuthSchema = z
  .discriminatedUnion("scheme", [
    z.strictObject({ scheme: z.literal("standard-webhooks"), secrets: Secrets, toleranceSeconds: Tolerance }),
    z.strictObject({
      scheme: z
        .literal("stripe")
        .describe(
          "Stripe's t=<seconds>,v1=<hex> over '{t}.{body}'; others (Mux, Calendly) send it under their own header",
        ),
      secrets: Secrets,
      toleranceSeconds: Tolerance,
      header: z
        .string()
        .regex(HEADER_NAME, "must be an HTTP header name")
        .default("Stripe-Signature")
        .describe("the header carrying it: Mux-Signature, Calendly-Webhook-Signature, ..."),
      version: z
        .string()
        .regex(/^v\d{1,3}$/, "v and a number")
        .default("v1")
        .describe("the key of the signatures in it (v1 for Stripe, Mux and Calendly)"),
    }),
    z.strictObject({ scheme: z.literal("github"), secrets: Secrets }),
    z.strictObject({ scheme: z.literal("shopify"), secrets: Secrets }),
    z.strictObject({ scheme: z.literal("hmac-sha256"), ...hmacFields("sha256") }),
    z.strictObject({
      scheme: z.literal("hmac").describe("an HMAC of the body in a header, with the algorithm the sender uses"),
      ...hmacFields("sha256"),
    }),
    z.strictObject({
      scheme: z.literal("twilio").describe("X-Twilio-Signature: HMAC-SHA1 with the account's Auth Token"),
      secrets: Secrets,
      url: QuerylessUrl.describe("the URL Twilio calls, as set in Twilio, less its query string (added as it arrives)"),
    }),
    z.strictObject({
      scheme: z
        .literal("slack")
        .describe("X-Slack-Signature (v0) over X-Slack-Request-Timestamp and the body; answers url_verification"),
      secrets: Secrets.describe("the app's Signing Secrets; several during a rotation"),
      toleranceSeconds: Tolerance,
    }),
    z.strictObject({
      scheme: z
        .literal("zoom")
        .describe("x-zm-signature (v0) over x-zm-request-timestamp and the body; answers endpoint.url_validation"),
      secrets: Secrets.describe("the app's webhook Secret Tokens; several during a rotation"),
      // Zoom retries a failed delivery 5, 25 and 85 minutes after it, and whether a retry carries
      // a new timestamp is unconfirmed: 300 s could refuse every retry. A replay within the
      // window bills nothing more (the same ids make the same identifiers).
      toleranceSeconds: tolerance(5_400),
    }),
    z.strictObject({
      scheme: z
        .literal("meta")
        .describe("Meta (WhatsApp, Messenger, Instagram): X-Hub-Signature-256; answers the GET hub.challenge"),
      secrets: Secrets.describe("the App Secret; two during a rotation"),
      verifyTokens: Secrets.describe("the Verify Token set beside the Callback URL in the App Dashboard"),
    }),
    z.strictObject({
      scheme: z.literal("paddle").describe("Paddle Billing: Paddle-Signature ts=<seconds>;h1=<hex> over '{ts}:{body}'"),
      secrets: Secrets.describe("the notification destination's secret keys; several during a rotation"),
      toleranceSeconds: Tolerance,
    }),
    z.strictObject({
      scheme: z
        .literal("zendesk")
        .describe("X-Zendesk-Webhook-Signature: base64 HMAC-SHA256 of the ISO timestamp header and the body"),
      secrets: Secrets.describe("the webhook's signing secrets; several during a rotation"),
      toleranceSeconds: Tolerance,
    }),
    z.strictObject({
      scheme: z
        .literal("hubspot")
        .describe("X-HubSpot-Signature-v3: base64 HMAC-SHA256 of the method, URL, body and millisecond timestamp"),
      secrets: Secrets.describe("the app's client secret; two during a rotation"),
      url: QuerylessUrl.describe(
        "the target URL HubSpot calls, as set in the app, less its query string (added as it arrives)",
      ),
      toleranceSeconds: Tolerance,
    }),
    z.strictObject({
      scheme: z.literal("token").describe("a header carrying a shared secret as it is (GitLab's X-Gitlab-Token)"),
      secrets: Secrets,
      header: z.string().regex(HEADER_NAME, "must be an HTTP header name").describe("header carrying the token"),
    }),
    z.strictObject({ scheme: z.literal("api-key").describe("Authorization: Bearer <one of METERHOOK_API_KEYS>") }),
    z.strictObject({ scheme: z.literal("none").describe("no check: for EventBridge and SQS sources only") }),
  ])
  .describe("How webhook requests to this source are authenticated");
export type Auth = z.infer<typeof AuthSchema>;

const CacheSettings = {
  cacheTtlSeconds: z.number().int().min(0).max(86_400).default(300),
  negativeCacheTtlSeconds: z.number().int().min(0).max(3_600).default(30),
  notFoundAttempts: z
    .number()
    .int()
    .min(1)
    .max(100)
    .default(1)
    .describe(
      "deliveries that may find no customer before customer_not_found: mappings often appear moments after first usage",
    ),
};

/** A number as DynamoDB takes it in a key (at most 38 digits), for a lookup's fixed keys and its customers. */
const NUMBER = String.raw`-?\d{1,38}(?:\.\d{1,38})?`;
export const DYNAMO_NUMBER = new RegExp(`^${NUMBER}$`);

/**
 * A `dynamodb` lookup's key attribute: a string (S) template, or a number (N): `{customer}`
 * itself, or a fixed number (a sort key).
 */
const DynamoKeyValue = z.union([
  z.string().min(1).max(1024),
  z.strictObject({ S: z.string().min(1).max(1024) }),
  z.strictObject({
    N: z
      .string()
      .regex(new RegExp(String.raw`^(?:\{customer\}|${NUMBER})$`), "{customer}, or a number")
      .describe("a number attribute"),
  }),
]);
export type DynamoKeyValue = z.infer<typeof DynamoKeyValue>;
/** A key attribute's type and template. */
export const keyTemplate = (v: DynamoKeyValue): { type: "S" | "N"; template: string } =>
  typeof v === "string"
    ? { type: "S", template: v }
    : "N" in v
      ? { type: "N", template: v.N }
      : { type: "S", template: v.S };

export const CustomerLookupSchema = z
  .discriminatedUnion("lookup", [
    z.strictObject({
      lookup: z.literal("event").describe("the customer expression gives a cus_ id"),
      ...CacheSettings,
    }),
    z.strictObject({
      lookup: z.literal("table"),
      table: z.record(z.string(), z.string().regex(/^cus_\w+$/)).default({}),
      file: z.string().optional().describe("JSON file of the same shape, relative to the working directory"),
      ...CacheSettings,
    }),
    z.strictObject({
      lookup: z.literal("http"),
      url: z
        .string()
        .regex(/\{customer\}/, "must contain {customer}")
        .describe("e.g. https://app.example.com/billing/{customer}"),
      // Checked here, at load: a name or value HTTP cannot carry would fail every lookup at run time.
      headers: z
        .record(
          z.string().regex(HEADER_NAME, "must be an HTTP header name"),
          z.union([z.string().regex(HEADER_VALUE, "must not contain CR, LF or NUL"), SecretRefSchema]),
        )
        .default({}),
      timeoutMs: z.number().int().min(50).max(30_000).default(2_000),
      stripeIdPath: Expression.default("stripe_customer_id").describe("JMESPath to the cus_ id in the JSON answer"),
      ...CacheSettings,
    }),
    z.strictObject({
      lookup: z.literal("dynamodb").describe("GetItem on a DynamoDB table of the app's accounts"),
      tableName: z
        .string()
        .regex(/^[A-Za-z0-9_.-]{3,255}$/, "a table name: 3-255 of A-Z a-z 0-9 _ . -")
        .describe("the table's name"),
      region: z
        .string()
        .regex(/^[a-z]{2}(?:-[a-z]+)+-\d$/, "an AWS region such as eu-west-1")
        .optional()
        .describe("the table's region, when not the stack's"),
      key: z
        .record(z.string().min(1).max(255), DynamoKeyValue)
        .refine((k) => Object.keys(k).length >= 1 && Object.keys(k).length <= 2, "one or two key attributes")
        .refine(
          (k) => Object.values(k).some((v) => keyTemplate(v).template.includes("{customer}")),
          "a key value must contain {customer}",
        )
        .describe(
          'the item\'s primary key: string attributes as { account_id: "{customer}" } or { pk: "ACCOUNT#{customer}", sk: "BILLING" }; a number attribute as { account_id: { N: "{customer}" } }',
        ),
      stripeIdAttribute: z
        .string()
        .regex(/^[^.]{1,255}(?:\.[^.]{1,255}){0,7}$/, "an attribute name, or names joined by . into maps")
        .default("stripe_customer_id")
        .describe("the string attribute holding the cus_ id; a.b reads b in the map a"),
      consistentRead: z.boolean().default(false).describe("a strongly consistent read (twice the read capacity)"),
      timeoutMs: z.number().int().min(50).max(30_000).default(2_000),
      ...CacheSettings,
    }),
    z.strictObject({
      lookup: z.literal("stripe-search"),
      metadataKey: z.string().regex(/^\w+$/).default("account_id").describe("searches metadata['<key>']:'<customer>'"),
      ...CacheSettings,
    }),
  ])
  .describe("How this source's customer values become Stripe customer ids");
export type CustomerLookupConfig = z.infer<typeof CustomerLookupSchema>;

const PropertyName = z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, "1-100 letters, digits, _ . : -");

export const EmitSchema = z
  .strictObject({
    event_name: z.string().min(1).max(100).describe("the Stripe meter's event_name"),
    value: Expression.default("`1`").describe("the usage value; `1` to count"),
    id: Expression.optional().describe("the event's unique id (default: the rule's id)"),
    customer: Expression.optional().describe("default: the rule's customer"),
    timestamp: Expression.optional().describe("ISO-8601 or Unix seconds (default: the rule's, else when received)"),
    properties: z.record(PropertyName, Expression).optional(),
  })
  .describe("One meter event made from a matching trigger");

const RuleName = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "1-64 letters, digits, _ . -");
const SourceName = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "lower-case letters, digits and -");

export const CancelSchema = z
  .strictObject({
    event_name: z.string().min(1).max(100).describe("the event_name of the meter event to cancel"),
    id: Expression.optional().describe("the id the event was made with (default: the rule's id)"),
    rule: RuleName.optional().describe(
      "the rule that made the event; omit for an event sent as a canonical event (POST /v1/events)",
    ),
    source: SourceName.optional().describe("the source of that rule (default: this source)"),
  })
  .refine((c) => c.source === undefined || c.rule !== undefined, "source needs rule")
  .describe("One meter event a matching trigger cancels (a meter event adjustment)");

export const RuleSchema = z
  .strictObject({
    name: RuleName,
    each: Expression.optional().describe(
      "an array (at most 500 elements): the rule applies to each element, which expressions see as `item` (and its position as `index`)",
    ),
    when: Expression.optional().describe(
      "the rule applies when this is truthy (to each item, with each); always when absent",
    ),
    id: Expression.optional(),
    customer: Expression.optional(),
    timestamp: Expression.optional(),
    emit: z.array(EmitSchema).min(1).max(20).optional(),
    cancel: z.array(CancelSchema).min(1).max(20).optional(),
  })
  .refine((r) => (r.emit === undefined) !== (r.cancel === undefined), "a rule has emit or cancel, one of them");
export type Rule = z.infer<typeof RuleSchema>;

export const SourceSchema = z.strictObject({
  type: z.enum(["webhook", "eventbridge", "sqs"]),
  auth: AuthSchema.default({ scheme: "none" }),
  match: z
    .strictObject({
      source: z.union([z.string(), z.array(z.string())]).optional(),
      detailType: z.union([z.string(), z.array(z.string())]).optional(),
    })
    .optional()
    .describe("EventBridge: which events this source takes, by source and detail-type"),
  customer: CustomerLookupSchema.default({
    lookup: "event",
    cacheTtlSeconds: 300,
    negativeCacheTtlSeconds: 30,
    notFoundAttempts: 1,
  }),
  unmatched: z.enum(["ignore", "dead-letter"]).default("ignore").describe("what to do with a trigger no rule matches"),
  rules: z.array(RuleSchema).min(1),
});
export type SourceConfig = z.infer<typeof SourceSchema>;

export const MappingConfigSchema = z.strictObject({
  $schema: z.string().optional(),
  version: z.literal(1),
  sources: z.record(SourceName, SourceSchema),
  sqs: z
    .strictObject({
      defaultSource: z
        .string()
        .optional()
        .describe(
          "source for ingest-queue messages without a meterhook_source attribute that are not canonical events",
        ),
    })
    .optional(),
});
export type MappingConfig = z.infer<typeof MappingConfigSchema>;
