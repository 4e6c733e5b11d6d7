// Public surface of the Spindle TypeScript client.
export * from "./client";
export * from "./errors";
export * as pb from "./gen/spindle/v1/engine";
export { FinishReason, ServerMode } from "./gen/spindle/v1/engine";
