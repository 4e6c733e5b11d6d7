// A thin client of spindle.v1.EngineService over @grpc/grpc-js: prompts from plain values, a Generate
// stream collected into a result, the engine verbs as promises, and SpindleError for every failure.
import { credentials as grpcCredentials, type ChannelCredentials, type ClientOptions, type ClientReadableStream,
  Metadata, type CallOptions, type ServiceError } from "@grpc/grpc-js";
import {
  type AddRequestResponse, type BranchResult, type ChatMessage, EngineServiceClient, type FinalOutput,
  FinishReason, type GenerateResponse, GenerationConfig, type GetModelInfoResponse, type MetricsResponse,
  type OutputDelta, type Prompt, type StepResponse, type TokenLogprob, type Usage,
} from "./gen/spindle/v1/engine";
import { SpindleError } from "./errors";

/** A prompt: text, `{ messages }` rendered with the chat template, or `{ tokenIds }` used as they are. */
export type PromptInput = string | { messages: ChatMessage[] } | { tokenIds: number[] };
/** Sampling and stopping parameters; unset fields take the server's defaults. */
export type ConfigInput = Partial<GenerationConfig>;

export interface CallOpts {
  /** Deadline of the call in milliseconds (default: the client's `timeoutMs`, if any). */
  timeoutMs?: number;
  /** Aborting the signal cancels the call. */
  signal?: AbortSignal;
}

export interface GenerateOpts extends CallOpts {
  /** Client-chosen request id (unique among live requests); the server assigns one when empty. */
  requestId?: string;
}

export interface ClientOpts {
  credentials?: ChannelCredentials;
  channelOptions?: Partial<ClientOptions>;
  /** Default deadline of every call, in milliseconds. */
  timeoutMs?: number;
}

/** The collected output of one branch. */
export interface BranchOutput {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs: TokenLogprob[];
  result?: BranchResult;
}

/** A finished generation; the top-level fields are branch 0's. */
export interface GenerationResult {
  requestId: string;
  text: string;
  tokenIds: number[];
  logprobs: TokenLogprob[];
  finishReason: FinishReason;
  /** The stop string or stop token id that ended branch 0, if any. */
  matchedStop: string | number | undefined;
  usage: Usage | undefined;
  branches: BranchOutput[];
  final: FinalOutput;
}

export function toPrompt(input: PromptInput): Prompt {
  if (typeof input === "string") return { text: input };
  if ("messages" in input) return { chat: { messages: input.messages } };
  return { tokenIds: { tokenIds: input.tokenIds } };
}

/** Collects the deltas of one request (from Generate, FollowRequest or Step) into a GenerationResult. */
export class ResultBuilder {
  private requestId = "";
  private readonly branches = new Map<number, BranchOutput>();
  private final: FinalOutput | undefined;

  add(requestId: string, deltas: OutputDelta[], final?: FinalOutput): void {
    if (requestId) this.requestId = requestId;
    for (const d of deltas) {
      const b = this.branch(d.index);
      b.text += d.text;
      b.tokenIds.push(...d.tokenIds);
      b.logprobs.push(...d.logprobs);
    }
    if (final) this.final = final;
  }

  get done(): boolean {
    return this.final !== undefined;
  }

  private branch(index: number): BranchOutput {
    let b = this.branches.get(index);
    if (!b) {
      b = { index, text: "", tokenIds: [], logprobs: [] };
      this.branches.set(index, b);
    }
    return b;
  }

  result(): GenerationResult {
    const final = this.final;
    if (!final) throw new SpindleError(13, "the stream ended without a final output");
    for (const r of final.branches) this.branch(r.index).result = r;
    const branches = [...this.branches.values()].sort((a, b) => a.index - b.index);
    const b0 = branches[0] ?? this.branch(0);
    return {
      requestId: this.requestId, text: b0.text, tokenIds: b0.tokenIds, logprobs: b0.logprobs,
      finishReason: b0.result?.finishReason ?? FinishReason.FINISH_REASON_UNSPECIFIED,
      matchedStop: b0.result?.stopString ?? b0.result?.stopTokenId, usage: final.usage, branches, final,
    };
  }
}

/** A running Generate call: iterate it for messages (the last carries `final`), `cancel()` to abort. */
export class GenerationStream implements AsyncIterable<GenerateResponse> {
  constructor(private readonly call: ClientReadableStream<GenerateResponse>, signal?: AbortSignal) {
    if (signal) {
      if (signal.aborted) call.cancel();
      else signal.addEventListener("abort", () => call.cancel(), { once: true });
    }
  }

  /** Cancels the call: the server aborts the request in the engine at once. */
  cancel(): void {
    this.call.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerateResponse> {
    try {
      for await (const msg of this.call as AsyncIterable<GenerateResponse>) {
        yield msg;
        if (msg.final) return;
      }
    } catch (err) {
      throw SpindleError.from(err);
    } finally {
      this.call.cancel();
    }
  }
}

type Unary<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>,
  cb: (err: ServiceError | null, res?: Res) => void) => unknown;

export class SpindleClient {
  /** The generated @grpc/grpc-js client, for calls this class does not wrap. */
  readonly raw: EngineServiceClient;
  private readonly timeoutMs: number | undefined;

  constructor(target: string, opts: ClientOpts = {}) {
    this.raw = new EngineServiceClient(target, opts.credentials ?? grpcCredentials.createInsecure(),
      opts.channelOptions);
    this.timeoutMs = opts.timeoutMs;
  }

  close(): void {
    this.raw.close();
  }

  private callOptions(opts: CallOpts): Partial<CallOptions> {
    const ms = opts.timeoutMs ?? this.timeoutMs;
    return ms === undefined ? {} : { deadline: Date.now() + ms };
  }

  private unary<Req, Res>(method: Unary<Req, Res>, req: Req, opts: CallOpts = {}): Promise<Res> {
    return new Promise((resolve, reject) => {
      const call = method.call(this.raw, req, new Metadata(), this.callOptions(opts), (err, res) => {
        if (err) reject(SpindleError.from(err));
        else resolve(res as Res);
      }) as { cancel(): void };
      opts.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    });
  }

  /** Starts a Generate call and returns its stream of deltas. */
  stream(prompt: PromptInput, config: ConfigInput = {}, opts: GenerateOpts = {}): GenerationStream {
    const call = this.raw.generate({ requestId: opts.requestId ?? "", prompt: toPrompt(prompt),
      config: GenerationConfig.fromPartial(config) }, this.callOptions(opts));
    return new GenerationStream(call, opts.signal);
  }

  /** Runs a generation to its end and returns the collected result. */
  async generate(prompt: PromptInput, config: ConfigInput = {}, opts: GenerateOpts = {}): Promise<GenerationResult> {
    const builder = new ResultBuilder();
    for await (const msg of this.stream(prompt, config, opts)) builder.add(msg.requestId, msg.deltas, msg.final);
    return builder.result();
  }

  /** Queues a request without waiting for its outputs (FollowRequest in threaded mode, Step in stepped). */
  addRequest(prompt: PromptInput, config: ConfigInput = {}, opts: GenerateOpts = {}): Promise<AddRequestResponse> {
    return this.unary(this.raw.addRequest, { requestId: opts.requestId ?? "", prompt: toPrompt(prompt),
      config: GenerationConfig.fromPartial(config) }, opts);
  }

  /** Aborts a request; resolves to whether it was still live. */
  async abortRequest(requestId: string, opts: CallOpts = {}): Promise<boolean> {
    return (await this.unary(this.raw.abortRequest, { requestId }, opts)).wasLive;
  }

  /** Advances a stepped server's engine by one step. */
  step(opts: CallOpts = {}): Promise<StepResponse> {
    return this.unary(this.raw.step, {}, opts);
  }

  /** Aborts every request and clears the engine; resolves to the number of live requests aborted. */
  async reset(opts: CallOpts = {}): Promise<number> {
    return (await this.unary(this.raw.reset, {}, opts)).abortedRequests;
  }

  metrics(opts: CallOpts = {}): Promise<MetricsResponse> {
    return this.unary(this.raw.metrics, {}, opts);
  }

  modelInfo(opts: CallOpts = {}): Promise<GetModelInfoResponse> {
    return this.unary(this.raw.getModelInfo, {}, opts);
  }

  async tokenize(text: string, opts: CallOpts = {}): Promise<number[]> {
    return (await this.unary(this.raw.tokenize, { text }, opts)).tokenIds;
  }

  async detokenize(tokenIds: number[], skipSpecialTokens = false, opts: CallOpts = {}): Promise<string> {
    return (await this.unary(this.raw.detokenize, { tokenIds, skipSpecialTokens }, opts)).text;
  }

  /** Collects the outputs of a request queued with addRequest (threaded mode) until it finishes. */
  async follow(requestId: string, opts: CallOpts = {}): Promise<GenerationResult> {
    const call = this.raw.followRequest({ requestId }, this.callOptions(opts));
    opts.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    const builder = new ResultBuilder();
    try {
      for await (const msg of call as AsyncIterable<GenerateResponse>) {
        builder.add(msg.requestId, msg.deltas, msg.final);
        if (msg.final) break;
      }
    } catch (err) {
      throw SpindleError.from(err);
    } finally {
      call.cancel();
    }
    return builder.result();
  }

  /** Drives a stepped server with Step until the request finishes (or maxSteps pass); other outputs are dropped. */
  async stepUntilDone(requestId: string, maxSteps = 10_000, opts: CallOpts = {}): Promise<GenerationResult> {
    const builder = new ResultBuilder();
    for (let i = 0; i < maxSteps && !builder.done; i++) {
      for (const out of (await this.step(opts)).outputs) {
        if (out.requestId === requestId) builder.add(out.requestId, out.deltas, out.final);
      }
    }
    return builder.result();
  }
}
