// The code mapping config bundled into a function (scripts/build.ts): resolved by the build only.
declare module "meterhook-code-config" {
  const config: unknown;
  export default config;
}
