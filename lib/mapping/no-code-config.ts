// What a bundle's `import("meterhook-code-config")` loads when it was built without a code
// mapping config (scripts/build.ts, METERHOOK_BUNDLE_CONFIG): nothing.
export default undefined;
