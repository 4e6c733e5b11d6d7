// Streams a completion from a Spindle server to stdout.
//   node dist/examples/generate.js [--target 127.0.0.1:50051] [--max-tokens 32] PROMPT...
import { parseArgs } from "node:util";
import { FinishReason, SpindleClient, SpindleError } from "../src";

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      "max-tokens": { type: "string", default: "32" },
      temperature: { type: "string", default: "0" },
    },
  });
  const prompt = positionals.join(" ");
  if (!prompt) {
    process.stderr.write("usage: generate [--target HOST:PORT] [--max-tokens N] PROMPT\n");
    return 2;
  }
  const client = new SpindleClient(values.target!, { timeoutMs: 60_000 });
  try {
    const stream = client.stream(prompt, {
      maxTokens: Number(values["max-tokens"]), temperature: Number(values.temperature),
    });
    for await (const msg of stream) {
      for (const d of msg.deltas) process.stdout.write(d.text);
      if (msg.final) {
        const u = msg.final.usage;
        process.stderr.write(`\n[${FinishReason[msg.final.branches[0].finishReason]}: ${u?.promptTokens} prompt + `
          + `${u?.completionTokens} completion tokens, first token ${u?.timeToFirstTokenMs.toFixed(1)} ms]\n`);
      }
    }
    return 0;
  } catch (err) {
    process.stderr.write(`${SpindleError.from(err).message}\n`);
    return 1;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; });
