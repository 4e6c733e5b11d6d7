package dev.spindle.client;

import dev.spindle.v1.BranchResult;
import dev.spindle.v1.FinalOutput;
import dev.spindle.v1.FinishReason;
import dev.spindle.v1.OutputDelta;
import dev.spindle.v1.TokenLogprob;
import io.grpc.Status;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** Collects the deltas of one request (from Generate, FollowRequest or Step) into a GenerationResult. */
public final class ResultBuilder {
  private static final class Acc {
    final StringBuilder text = new StringBuilder();
    final List<Integer> tokenIds = new ArrayList<>();
    final List<TokenLogprob> logprobs = new ArrayList<>();
    BranchResult result;
  }

  private String requestId = "";
  private final Map<Integer, Acc> branches = new TreeMap<>();
  private FinalOutput finalOutput;

  /** Folds one message in; {@code finalOutput} may be null. */
  public void add(String requestId, List<OutputDelta> deltas, FinalOutput finalOutput) {
    if (!requestId.isEmpty()) {
      this.requestId = requestId;
    }
    for (OutputDelta d : deltas) {
      Acc b = branches.computeIfAbsent(d.getIndex(), i -> new Acc());
      b.text.append(d.getText());
      b.tokenIds.addAll(d.getTokenIdsList());
      b.logprobs.addAll(d.getLogprobsList());
    }
    if (finalOutput != null) {
      this.finalOutput = finalOutput;
    }
  }

  public boolean done() {
    return finalOutput != null;
  }

  /** The collected result; a SpindleException (INTERNAL) when the final output never came. */
  public GenerationResult result() {
    if (finalOutput == null) {
      throw new SpindleException(Status.Code.INTERNAL, "the stream ended without a final output", "", "",
          Map.of(), List.of(), null);
    }
    for (BranchResult r : finalOutput.getBranchesList()) {
      branches.computeIfAbsent(r.getIndex(), i -> new Acc()).result = r;
    }
    branches.computeIfAbsent(0, i -> new Acc());
    List<GenerationResult.Branch> out = new ArrayList<>();
    for (Map.Entry<Integer, Acc> e : branches.entrySet()) {
      Acc a = e.getValue();
      out.add(new GenerationResult.Branch(e.getKey(), a.text.toString(), List.copyOf(a.tokenIds),
          List.copyOf(a.logprobs), a.result));
    }
    GenerationResult.Branch b0 = out.get(0);
    FinishReason reason = b0.result() == null ? FinishReason.FINISH_REASON_UNSPECIFIED : b0.result().getFinishReason();
    Object stop = null;
    if (b0.result() != null && b0.result().hasStopString()) {
      stop = b0.result().getStopString();
    } else if (b0.result() != null && b0.result().hasStopTokenId()) {
      stop = b0.result().getStopTokenId();
    }
    return new GenerationResult(requestId, b0.text(), b0.tokenIds(), b0.logprobs(), reason, stop,
        finalOutput.getUsage(), List.copyOf(out), finalOutput);
  }
}
