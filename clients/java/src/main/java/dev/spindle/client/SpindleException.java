package dev.spindle.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * A failed call: the gRPC status code and message, the google.rpc.ErrorInfo reason the server sent and
 * every google.rpc.BadRequest field violation (from the grpc-status-details-bin trailer).
 */
public final class SpindleException extends RuntimeException {
  /** One bad field of a request. */
  public record FieldViolation(String field, String description) {}

  private final Status.Code code;
  private final String description;
  private final String reason;
  private final String domain;
  private final Map<String, String> errorMetadata;
  private final List<FieldViolation> fieldViolations;

  public SpindleException(Status.Code code, String description, String reason, String domain,
      Map<String, String> errorMetadata, List<FieldViolation> fieldViolations, Throwable cause) {
    super(message(code, description, fieldViolations), cause);
    this.code = code;
    this.description = description;
    this.reason = reason;
    this.domain = domain;
    this.errorMetadata = Map.copyOf(errorMetadata);
    this.fieldViolations = List.copyOf(fieldViolations);
  }

  private static String message(Status.Code code, String description, List<FieldViolation> violations) {
    StringBuilder b = new StringBuilder(code.name()).append(": ").append(description);
    for (FieldViolation v : violations) {
      b.append(" [").append(v.field()).append(": ").append(v.description()).append(']');
    }
    return b.toString();
  }

  /** Turns any throwable from a gRPC call into a SpindleException (one without a status is UNKNOWN). */
  public static SpindleException from(Throwable t) {
    if (t instanceof SpindleException e) {
      return e;
    }
    Status status = Status.fromThrowable(t);
    List<FieldViolation> violations = new ArrayList<>();
    String reason = "";
    String domain = "";
    Map<String, String> metadata = Map.of();
    com.google.rpc.Status detail = StatusProto.fromThrowable(t);
    if (detail != null) {
      for (Any any : detail.getDetailsList()) {
        try {
          if (any.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : any.unpack(BadRequest.class).getFieldViolationsList()) {
              violations.add(new FieldViolation(v.getField(), v.getDescription()));
            }
          } else if (any.is(ErrorInfo.class)) {
            ErrorInfo info = any.unpack(ErrorInfo.class);
            reason = info.getReason();
            domain = info.getDomain();
            metadata = info.getMetadataMap();
          }
        } catch (InvalidProtocolBufferException ignored) {
          // a malformed detail leaves the status code and message as they are
        }
      }
    }
    String description = status.getDescription() != null ? status.getDescription() : String.valueOf(t.getMessage());
    return new SpindleException(status.getCode(), description, reason, domain, metadata, violations, t);
  }

  /** Wraps a StatusRuntimeException (the form grpc-java stubs throw). */
  static SpindleException from(StatusRuntimeException e) {
    return from((Throwable) e);
  }

  public Status.Code code() {
    return code;
  }

  public String description() {
    return description;
  }

  /** The ErrorInfo reason, e.g. "INVALID_FIELD" (empty when the server sent none). */
  public String reason() {
    return reason;
  }

  public String domain() {
    return domain;
  }

  public Map<String, String> errorMetadata() {
    return errorMetadata;
  }

  public List<FieldViolation> fieldViolations() {
    return fieldViolations;
  }

  /** The violation naming {@code field} exactly, or as the last dotted component of its path. */
  public Optional<FieldViolation> field(String field) {
    return fieldViolations.stream()
        .filter(v -> v.field().equals(field) || v.field().endsWith("." + field))
        .findFirst();
  }
}
