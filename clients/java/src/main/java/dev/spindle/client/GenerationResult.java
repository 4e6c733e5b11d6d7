package dev.spindle.client;

import dev.spindle.v1.BranchResult;
import dev.spindle.v1.FinalOutput;
import dev.spindle.v1.FinishReason;
import dev.spindle.v1.TokenLogprob;
import dev.spindle.v1.Usage;
import java.util.List;

/**
 * A finished generation; the top-level accessors are branch 0's.
 *
 * @param matchedStop the stop string (String) or stop token id (Integer) that ended branch 0, or null
 */
public record GenerationResult(String requestId, String text, List<Integer> tokenIds, List<TokenLogprob> logprobs,
    FinishReason finishReason, Object matchedStop, Usage usage, List<Branch> branches, FinalOutput finalOutput) {

  /** The collected output of one branch. */
  public record Branch(int index, String text, List<Integer> tokenIds, List<TokenLogprob> logprobs,
      BranchResult result) {}
}
