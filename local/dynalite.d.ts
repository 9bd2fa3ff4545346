// dynalite publishes no types; this is the part of its API the local runtime and the tests use.
declare module "dynalite" {
  import type { Server } from "node:http";

  function dynalite(options?: {
    path?: string;
    createTableMs?: number;
    deleteTableMs?: number;
    updateTableMs?: number;
  }): Server;
  export default dynalite;
}
