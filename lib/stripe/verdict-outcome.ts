import type { Verdict } from "./retry-policy.js";
import type { SubmitOutcome } from "./submitter.js";

export function toOutcome(v: Verdict): SubmitOutcome {
  switch (v.kind) {
    case "ok":
      return { kind: "billed", duplicate: v.duplicate, requestId: v.requestId };
    case "retry":
      return { kind: "retry", reason: v.reason };
    case "permanent":
      return { kind: "rejected", code: v.code, reason: v.reason, requestId: v.requestId };
  }
}
