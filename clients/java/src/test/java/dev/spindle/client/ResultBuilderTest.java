package dev.spindle.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.google.protobuf.Any;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import dev.spindle.v1.BranchResult;
import dev.spindle.v1.FinalOutput;
import dev.spindle.v1.FinishReason;
import dev.spindle.v1.OutputDelta;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The client's pure parts: collecting deltas and reading error details. */
class ResultBuilderTest {
  @Test
  void collectsBranchesAndMatchedStop() {
    ResultBuilder b = new ResultBuilder();
    b.add("r1", List.of(OutputDelta.newBuilder().setIndex(0).setText("he").addTokenIds(1).build(),
        OutputDelta.newBuilder().setIndex(1).setText("x").addTokenIds(7).build()), null);
    assertThrows(SpindleException.class, b::result);
    b.add("", List.of(OutputDelta.newBuilder().setIndex(0).setText("llo").addTokenIds(2).build()),
        FinalOutput.newBuilder()
            .addBranches(BranchResult.newBuilder().setIndex(0).setFinishReason(FinishReason.FINISH_REASON_STOP)
                .setStopTokenId(2))
            .addBranches(BranchResult.newBuilder().setIndex(1).setFinishReason(FinishReason.FINISH_REASON_LENGTH))
            .build());
    GenerationResult r = b.result();
    assertEquals("r1", r.requestId());
    assertEquals("hello", r.text());
    assertEquals(List.of(1, 2), r.tokenIds());
    assertEquals(FinishReason.FINISH_REASON_STOP, r.finishReason());
    assertEquals(2, r.matchedStop());
    assertEquals("x", r.branches().get(1).text());
  }

  @Test
  void readsFieldViolationsAndReason() {
    com.google.rpc.Status status = com.google.rpc.Status.newBuilder()
        .setCode(Status.Code.INVALID_ARGUMENT.value()).setMessage("bad config")
        .addDetails(Any.pack(BadRequest.newBuilder().addFieldViolations(BadRequest.FieldViolation.newBuilder()
            .setField("config.top_p").setDescription("must be in (0, 1]")).build()))
        .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("INVALID_FIELD").setDomain("spindle.dev").build()))
        .build();
    SpindleException e = SpindleException.from(StatusProto.toStatusRuntimeException(status));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertEquals("INVALID_FIELD", e.reason());
    assertEquals("must be in (0, 1]", e.field("top_p").orElseThrow().description());
    assertEquals(Status.Code.UNKNOWN, SpindleException.from(new IllegalStateException("x")).code());
  }
}
