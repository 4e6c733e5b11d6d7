package dev.spindle.client;

import dev.spindle.v1.AbortRequestRequest;
import dev.spindle.v1.AddRequestRequest;
import dev.spindle.v1.AddRequestResponse;
import dev.spindle.v1.ChatMessage;
import dev.spindle.v1.ChatMessages;
import dev.spindle.v1.DetokenizeRequest;
import dev.spindle.v1.EngineServiceGrpc;
import dev.spindle.v1.FollowRequestRequest;
import dev.spindle.v1.FollowRequestResponse;
import dev.spindle.v1.GenerateRequest;
import dev.spindle.v1.GenerateResponse;
import dev.spindle.v1.GenerationConfig;
import dev.spindle.v1.GetModelInfoRequest;
import dev.spindle.v1.GetModelInfoResponse;
import dev.spindle.v1.MetricsRequest;
import dev.spindle.v1.MetricsResponse;
import dev.spindle.v1.Prompt;
import dev.spindle.v1.RequestOutput;
import dev.spindle.v1.ResetRequest;
import dev.spindle.v1.StepRequest;
import dev.spindle.v1.StepResponse;
import dev.spindle.v1.TokenIds;
import dev.spindle.v1.TokenizeRequest;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * A thin client of spindle.v1.EngineService: prompts from plain values, a Generate stream collected into a
 * {@link GenerationResult}, the engine verbs, and {@link SpindleException} for every failure. Thread-safe.
 */
public final class SpindleClient implements AutoCloseable {
  private final ManagedChannel channel;
  private final boolean ownsChannel;
  private final Duration timeout;
  private final EngineServiceGrpc.EngineServiceBlockingStub stub;

  /** A plaintext channel to {@code target} ("host:port"), every call with a 60 s deadline. */
  public SpindleClient(String target) {
    this(ManagedChannelBuilder.forTarget(target).usePlaintext().build(), true, Duration.ofSeconds(60));
  }

  /** A client over an existing channel (closed by {@link #close} only when {@code ownsChannel}). */
  public SpindleClient(ManagedChannel channel, boolean ownsChannel, Duration timeout) {
    this.channel = channel;
    this.ownsChannel = ownsChannel;
    this.timeout = timeout;
    this.stub = EngineServiceGrpc.newBlockingStub(channel);
  }

  /** The generated blocking stub, for calls this class does not wrap. */
  public EngineServiceGrpc.EngineServiceBlockingStub raw() {
    return stub.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
  }

  @Override
  public void close() throws InterruptedException {
    if (ownsChannel) {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  // Prompts and configurations.

  public static Prompt text(String text) {
    return Prompt.newBuilder().setText(text).build();
  }

  public static Prompt chat(ChatMessage... messages) {
    return Prompt.newBuilder().setChat(ChatMessages.newBuilder().addAllMessages(Arrays.asList(messages))).build();
  }

  public static ChatMessage message(String role, String content) {
    return ChatMessage.newBuilder().setRole(role).setContent(content).build();
  }

  public static Prompt tokens(int... ids) {
    TokenIds.Builder b = TokenIds.newBuilder();
    for (int id : ids) {
      b.addTokenIds(id);
    }
    return Prompt.newBuilder().setTokenIds(b).build();
  }

  /** Greedy decoding of at most {@code maxTokens} tokens. */
  public static GenerationConfig greedy(int maxTokens) {
    return GenerationConfig.newBuilder().setTemperature(0f).setMaxTokens(maxTokens).build();
  }

  private <T> T call(Supplier<T> body) {
    try {
      return body.get();
    } catch (StatusRuntimeException e) {
      throw SpindleException.from(e);
    }
  }

  // Generation.

  /** Starts a Generate call; iterate the stream, cancel it to abort the request. */
  public GenerationStream stream(Prompt prompt, GenerationConfig config, String requestId) {
    GenerateRequest req = GenerateRequest.newBuilder().setRequestId(requestId == null ? "" : requestId)
        .setPrompt(prompt).setConfig(config).build();
    Context.CancellableContext ctx = Context.current().withCancellation();
    Context previous = ctx.attach();
    try {
      Iterator<GenerateResponse> it = call(() -> raw().generate(req));
      return new GenerationStream(ctx, it);
    } finally {
      ctx.detach(previous);
    }
  }

  /** Runs a generation to its end and returns the collected result. */
  public GenerationResult generate(Prompt prompt, GenerationConfig config) {
    ResultBuilder builder = new ResultBuilder();
    try (GenerationStream stream = stream(prompt, config, "")) {
      for (GenerateResponse msg : stream) {
        builder.add(msg.getRequestId(), msg.getDeltasList(), msg.hasFinal() ? msg.getFinal() : null);
      }
    }
    return builder.result();
  }

  public GenerationResult generate(String prompt, GenerationConfig config) {
    return generate(text(prompt), config);
  }

  // Engine verbs.

  /** Queues a request (follow it with {@link #follow} in threaded mode, or {@link #step} in stepped mode). */
  public AddRequestResponse addRequest(Prompt prompt, GenerationConfig config, String requestId) {
    AddRequestRequest req = AddRequestRequest.newBuilder().setRequestId(requestId == null ? "" : requestId)
        .setPrompt(prompt).setConfig(config).build();
    return call(() -> raw().addRequest(req));
  }

  /** Aborts a request; returns whether it was still live. */
  public boolean abortRequest(String requestId) {
    return call(() -> raw().abortRequest(AbortRequestRequest.newBuilder().setRequestId(requestId).build()))
        .getWasLive();
  }

  /** Advances a stepped server's engine by one step. */
  public StepResponse step() {
    return call(() -> raw().step(StepRequest.getDefaultInstance()));
  }

  /** Aborts every request and clears the engine; returns how many live requests were aborted. */
  public int reset() {
    return call(() -> raw().reset(ResetRequest.getDefaultInstance())).getAbortedRequests();
  }

  public MetricsResponse metrics() {
    return call(() -> raw().metrics(MetricsRequest.getDefaultInstance()));
  }

  public GetModelInfoResponse modelInfo() {
    return call(() -> raw().getModelInfo(GetModelInfoRequest.getDefaultInstance()));
  }

  public List<Integer> tokenize(String text) {
    return call(() -> raw().tokenize(TokenizeRequest.newBuilder().setText(text).build())).getTokenIdsList();
  }

  public String detokenize(List<Integer> tokenIds, boolean skipSpecialTokens) {
    return call(() -> raw().detokenize(DetokenizeRequest.newBuilder().addAllTokenIds(tokenIds)
        .setSkipSpecialTokens(skipSpecialTokens).build())).getText();
  }

  /** Collects the outputs of a request queued with addRequest (threaded mode) until it finishes. */
  public GenerationResult follow(String requestId) {
    ResultBuilder builder = new ResultBuilder();
    Context.CancellableContext ctx = Context.current().withCancellation();
    try {
      ctx.run(() -> call(() -> {
        Iterator<FollowRequestResponse> it =
            raw().followRequest(FollowRequestRequest.newBuilder().setRequestId(requestId).build());
        while (!builder.done() && it.hasNext()) {
          FollowRequestResponse msg = it.next();
          builder.add(msg.getRequestId(), msg.getDeltasList(), msg.hasFinal() ? msg.getFinal() : null);
        }
        return null;
      }));
    } finally {
      ctx.cancel(null);
    }
    return builder.result();
  }

  /** Drives a stepped server with Step until the request finishes (or maxSteps pass); other outputs are dropped. */
  public GenerationResult stepUntilDone(String requestId, int maxSteps) {
    ResultBuilder builder = new ResultBuilder();
    for (int i = 0; i < maxSteps && !builder.done(); i++) {
      for (RequestOutput out : step().getOutputsList()) {
        if (out.getRequestId().equals(requestId)) {
          builder.add(out.getRequestId(), out.getDeltasList(), out.hasFinal() ? out.getFinal() : null);
        }
      }
    }
    return builder.result();
  }
}
