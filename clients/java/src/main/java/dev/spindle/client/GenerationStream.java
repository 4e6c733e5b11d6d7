package dev.spindle.client;

import dev.spindle.v1.GenerateResponse;
import io.grpc.Context;
import io.grpc.StatusRuntimeException;
import java.util.Iterator;
import java.util.NoSuchElementException;

/**
 * A running Generate call: iterate it for messages (the last carries {@code getFinal()}); {@link #cancel}
 * (or close) cancels the call and the server aborts the request in the engine at once. Iteration throws
 * {@link SpindleException}.
 */
public final class GenerationStream implements Iterator<GenerateResponse>, Iterable<GenerateResponse>, AutoCloseable {
  private final Context.CancellableContext context;
  private final Iterator<GenerateResponse> inner;
  private boolean finished;

  GenerationStream(Context.CancellableContext context, Iterator<GenerateResponse> inner) {
    this.context = context;
    this.inner = inner;
  }

  @Override
  public boolean hasNext() {
    if (finished) {
      return false;
    }
    try {
      if (!inner.hasNext()) {
        finished = true;
        context.cancel(null);
      }
      return !finished;
    } catch (StatusRuntimeException e) {
      finished = true;
      context.cancel(null);
      throw SpindleException.from(e);
    }
  }

  @Override
  public GenerateResponse next() {
    if (!hasNext()) {
      throw new NoSuchElementException();
    }
    try {
      GenerateResponse msg = inner.next();
      if (msg.hasFinal()) {
        finished = true;
        context.cancel(null);
      }
      return msg;
    } catch (StatusRuntimeException e) {
      finished = true;
      throw SpindleException.from(e);
    }
  }

  @Override
  public Iterator<GenerateResponse> iterator() {
    return this;
  }

  /** Cancels the call; a later {@link #hasNext} throws a CANCELLED SpindleException unless it had ended. */
  public void cancel() {
    context.cancel(null);
  }

  @Override
  public void close() {
    finished = true;
    context.cancel(null);
  }
}
