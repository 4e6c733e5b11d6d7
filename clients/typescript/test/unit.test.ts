// Tests of the client's pure parts: collecting deltas and decoding error details.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { FinishReason, ResultBuilder, SpindleError } from "../src";
import { BadRequest, ErrorInfo } from "../src/gen/google/rpc/error_details";
import { Status as RpcStatus } from "../src/gen/google/rpc/status";

test("ResultBuilder collects every branch and the matched stop", () => {
  const b = new ResultBuilder();
  b.add("r1", [{ index: 0, text: "he", tokenIds: [1], logprobs: [] }, { index: 1, text: "x", tokenIds: [7], logprobs: [] }]);
  assert.throws(() => b.result(), SpindleError);
  b.add("", [{ index: 0, text: "llo", tokenIds: [2], logprobs: [] }], {
    branches: [
      { index: 0, finishReason: FinishReason.FINISH_REASON_STOP, stopString: "!", completionTokens: 2 },
      { index: 1, finishReason: FinishReason.FINISH_REASON_LENGTH, completionTokens: 1 },
    ],
    promptTokenIds: [5], errorMessage: "",
  });
  const r = b.result();
  assert.equal(r.requestId, "r1");
  assert.equal(r.text, "hello");
  assert.deepEqual(r.tokenIds, [1, 2]);
  assert.equal(r.finishReason, FinishReason.FINISH_REASON_STOP);
  assert.equal(r.matchedStop, "!");
  assert.equal(r.branches[1].text, "x");
});

test("SpindleError decodes BadRequest and ErrorInfo from the status details trailer", () => {
  const details = RpcStatus.encode({
    code: status.INVALID_ARGUMENT, message: "bad config", details: [
      { typeUrl: "type.googleapis.com/google.rpc.BadRequest", value: Buffer.from(BadRequest.encode({ fieldViolations: [
        { field: "config.top_p", description: "must be in (0, 1]", reason: "", localizedMessage: undefined }] }).finish()) },
      { typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: Buffer.from(ErrorInfo.encode({
        reason: "INVALID_FIELD", domain: "spindle.dev", metadata: {} }).finish()) },
    ],
  }).finish();
  const md = new Metadata();
  md.set("grpc-status-details-bin", Buffer.from(details));
  const err = SpindleError.from(Object.assign(new Error("x"), { code: status.INVALID_ARGUMENT, details: "bad config", metadata: md }));
  assert.equal(err.code, status.INVALID_ARGUMENT);
  assert.equal(err.codeName, "INVALID_ARGUMENT");
  assert.equal(err.reason, "INVALID_FIELD");
  assert.equal(err.field("top_p")?.description, "must be in (0, 1]");
  assert.equal(SpindleError.from(new Error("plain")).code, status.UNKNOWN);
});
