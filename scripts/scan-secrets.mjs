// Fails if a secret shows up in the given output (CI runs it over the whole test suite's output).
// Looks for anything shaped like a Stripe secret/restricted key, meter-event session token or
// webhook secret, and for the literal secrets the tests configure.
import { readFileSync } from "node:fs";

const SHAPES =
  /\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{6,}|\bek_(?:live|test)_[A-Za-z0-9]{6,}|\bwhsec_[A-Za-z0-9+/=]{6,}/g;
const CONFIGURED = [
  "mh_test_key_one",
  "mh_test_key_two",
  "mh_hostile_api_key_0001",
  "gh-hostile-secret-0001",
  "hmac-hostile-secret-0001",
  "gh-webhook-secret-e2e-0001",
  "llm-signing-secret-0001",
  "billing-token-0001",
  "svc-token-0001",
  "key-one-0001",
  "key-two-0002",
  "bench-key-0001",
];

let found = 0;
for (const file of process.argv.slice(2)) {
  const lines = readFileSync(file, "utf8").split("\n");
  lines.forEach((line, i) => {
    const hits = [...(line.match(SHAPES) ?? []), ...CONFIGURED.filter((s) => line.includes(s))];
    for (const hit of hits) {
      found++;
      console.error(`${file}:${i + 1}: secret-like text ${hit.slice(0, 8)}... in: ${line.slice(0, 160)}`);
    }
  });
}
if (found > 0) {
  console.error(`${found} secret(s) found in test output`);
  process.exit(1);
}
console.log(`scan-secrets: no secrets in ${process.argv.slice(2).join(", ")}`);
