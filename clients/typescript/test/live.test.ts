// Tests against live servers started by tests/polyglot (one threaded, one stepped), which passes their
// addresses and the Python SyncClient's greedy result for the same input through the environment.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { FinishReason, ServerMode, SpindleClient, SpindleError } from "../src";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through tests/polyglot (make test-polyglot)`);
  return v;
}

interface Expected { prompt: string; max_tokens: number; token_ids: number[]; text: string; finish_reason: string }
const expected = (): Expected => JSON.parse(env("SPINDLE_TEST_EXPECTED")) as Expected;

const clients: SpindleClient[] = [];
function client(envName: string): SpindleClient {
  const c = new SpindleClient(env(envName), { timeoutMs: 60_000 });
  clients.push(c);
  return c;
}
after(() => clients.forEach((c) => c.close()));

const greedy = (maxTokens: number) => ({ temperature: 0, maxTokens });

test("greedy generate equals the Python client's result", async () => {
  const e = expected();
  const r = await client("SPINDLE_TEST_TARGET").generate(e.prompt, greedy(e.max_tokens));
  assert.deepEqual(r.tokenIds, e.token_ids);
  assert.equal(r.text, e.text);
  assert.equal(FinishReason[r.finishReason], e.finish_reason);
  assert.equal(r.usage?.completionTokens, e.token_ids.length);
  assert.equal(r.final.effectiveConfig?.temperature, 0);
});

test("a cancel ends the stream and the server counts the request aborted", async () => {
  const c = client("SPINDLE_TEST_TARGET");
  const before = await c.metrics();
  const controller = new AbortController();
  const stream = c.stream("A long story:", { temperature: 0, maxTokens: 400, ignoreEos: true },
    { requestId: "ts-cancel", signal: controller.signal });
  let messages = 0;
  await assert.rejects((async () => {
    for await (const msg of stream) {
      assert.equal(msg.final, undefined, "the stream finished normally despite the cancel");
      if (++messages === 1) controller.abort();
    }
  })(), (err: unknown) => err instanceof SpindleError && err.code === status.CANCELLED);
  assert.ok(messages >= 1);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = await c.metrics();
    if (m.abortedRequests > before.abortedRequests && m.liveRequests === 0n && m.runningRequests === 0n) {
      assert.equal(m.kvPagesUsed, 0n);
      break;
    }
    assert.ok(Date.now() < deadline, `metrics never showed the abort: ${JSON.stringify(m, (_k, v) => typeof v === "bigint" ? v.toString() : v)}`);
    await sleep(20);
  }
});

test("an invalid argument surfaces as INVALID_ARGUMENT naming the field", async () => {
  const c = client("SPINDLE_TEST_TARGET");
  await assert.rejects(c.generate("hello", { temperature: -1, maxTokens: 4 }), (err: unknown) => {
    assert.ok(err instanceof SpindleError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.equal(err.field("temperature")?.field, "config.temperature");
    return true;
  });
});

test("stepped mode: AddRequest then Step to completion", async () => {
  const e = expected();
  const c = client("SPINDLE_TEST_STEPPED_TARGET");
  await c.reset();
  const added = await c.addRequest(e.prompt, greedy(e.max_tokens), { requestId: "ts-stepped" });
  assert.equal(added.requestId, "ts-stepped");
  assert.ok(added.promptTokenIds.length > 0);
  await assert.rejects(c.addRequest(e.prompt, greedy(e.max_tokens), { requestId: "ts-stepped" }),
    (err: unknown) => err instanceof SpindleError && err.code === status.ALREADY_EXISTS);
  const r = await c.stepUntilDone("ts-stepped", 10 * e.max_tokens + 10);
  assert.deepEqual(r.tokenIds, e.token_ids);
  assert.equal(r.text, e.text);
  assert.equal((await c.step()).engineEmpty, true);
  await assert.rejects(client("SPINDLE_TEST_TARGET").step(),
    (err: unknown) => err instanceof SpindleError && err.code === status.FAILED_PRECONDITION);
});

test("token ids, chat, tokenize/detokenize, model info and AddRequest + follow", async () => {
  const e = expected();
  const c = client("SPINDLE_TEST_TARGET");
  const info = await c.modelInfo();
  assert.equal(info.mode, ServerMode.SERVER_MODE_THREADED);
  assert.ok(info.hasChatTemplate);
  const ids = await c.tokenize(e.prompt);
  assert.ok(ids.length > 0);
  const fromIds = await c.generate({ tokenIds: ids }, greedy(e.max_tokens));
  assert.deepEqual(fromIds.tokenIds, e.token_ids);
  assert.equal(await c.detokenize(fromIds.tokenIds), e.text);
  const chat = await c.generate({ messages: [{ role: "user", content: "Hello there" }] }, greedy(4));
  assert.ok(chat.tokenIds.length > 0 && (chat.usage?.promptTokens ?? 0) > 2);
  const added = await c.addRequest(e.prompt, { ...greedy(24), ignoreEos: true }, { requestId: "ts-follow" });
  try {
    const followed = await c.follow(added.requestId);
    assert.equal(followed.finishReason, FinishReason.FINISH_REASON_LENGTH);
    assert.equal(followed.usage?.completionTokens, 24);
  } catch (err) {
    // it may finish before FollowRequest reaches the server
    assert.ok(err instanceof SpindleError && err.code === status.NOT_FOUND, String(err));
  }
});
