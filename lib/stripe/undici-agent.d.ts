// undici publishes no types for its files; this one exports the Agent class `undici` re-exports.
declare module "undici/lib/dispatcher/agent.js" {
  import type { Agent } from "undici";

  const AgentClass: typeof Agent;
  export default AgentClass;
}
