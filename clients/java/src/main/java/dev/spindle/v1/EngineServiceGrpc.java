package dev.spindle.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * The Spindle engine: text generation, the engine's own verbs and small model utilities.
 * </pre>
 */
@javax.annotation.Generated(
    value = "by gRPC proto compiler (version 1.68.1)",
    comments = "Source: spindle/v1/engine.proto")
@io.grpc.stub.annotations.GrpcGenerated
public final class EngineServiceGrpc {

  private EngineServiceGrpc() {}

  public static final java.lang.String SERVICE_NAME = "spindle.v1.EngineService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.GenerateRequest,
      dev.spindle.v1.GenerateResponse> getGenerateMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Generate",
      requestType = dev.spindle.v1.GenerateRequest.class,
      responseType = dev.spindle.v1.GenerateResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.GenerateRequest,
      dev.spindle.v1.GenerateResponse> getGenerateMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.GenerateRequest, dev.spindle.v1.GenerateResponse> getGenerateMethod;
    if ((getGenerateMethod = EngineServiceGrpc.getGenerateMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getGenerateMethod = EngineServiceGrpc.getGenerateMethod) == null) {
          EngineServiceGrpc.getGenerateMethod = getGenerateMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.GenerateRequest, dev.spindle.v1.GenerateResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Generate"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.GenerateRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.GenerateResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("Generate"))
              .build();
        }
      }
    }
    return getGenerateMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.AddRequestRequest,
      dev.spindle.v1.AddRequestResponse> getAddRequestMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "AddRequest",
      requestType = dev.spindle.v1.AddRequestRequest.class,
      responseType = dev.spindle.v1.AddRequestResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.AddRequestRequest,
      dev.spindle.v1.AddRequestResponse> getAddRequestMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.AddRequestRequest, dev.spindle.v1.AddRequestResponse> getAddRequestMethod;
    if ((getAddRequestMethod = EngineServiceGrpc.getAddRequestMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getAddRequestMethod = EngineServiceGrpc.getAddRequestMethod) == null) {
          EngineServiceGrpc.getAddRequestMethod = getAddRequestMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.AddRequestRequest, dev.spindle.v1.AddRequestResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "AddRequest"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.AddRequestRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.AddRequestResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("AddRequest"))
              .build();
        }
      }
    }
    return getAddRequestMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.AbortRequestRequest,
      dev.spindle.v1.AbortRequestResponse> getAbortRequestMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "AbortRequest",
      requestType = dev.spindle.v1.AbortRequestRequest.class,
      responseType = dev.spindle.v1.AbortRequestResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.AbortRequestRequest,
      dev.spindle.v1.AbortRequestResponse> getAbortRequestMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.AbortRequestRequest, dev.spindle.v1.AbortRequestResponse> getAbortRequestMethod;
    if ((getAbortRequestMethod = EngineServiceGrpc.getAbortRequestMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getAbortRequestMethod = EngineServiceGrpc.getAbortRequestMethod) == null) {
          EngineServiceGrpc.getAbortRequestMethod = getAbortRequestMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.AbortRequestRequest, dev.spindle.v1.AbortRequestResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "AbortRequest"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.AbortRequestRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.AbortRequestResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("AbortRequest"))
              .build();
        }
      }
    }
    return getAbortRequestMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.StepRequest,
      dev.spindle.v1.StepResponse> getStepMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Step",
      requestType = dev.spindle.v1.StepRequest.class,
      responseType = dev.spindle.v1.StepResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.StepRequest,
      dev.spindle.v1.StepResponse> getStepMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.StepRequest, dev.spindle.v1.StepResponse> getStepMethod;
    if ((getStepMethod = EngineServiceGrpc.getStepMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getStepMethod = EngineServiceGrpc.getStepMethod) == null) {
          EngineServiceGrpc.getStepMethod = getStepMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.StepRequest, dev.spindle.v1.StepResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Step"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.StepRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.StepResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("Step"))
              .build();
        }
      }
    }
    return getStepMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.ResetRequest,
      dev.spindle.v1.ResetResponse> getResetMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Reset",
      requestType = dev.spindle.v1.ResetRequest.class,
      responseType = dev.spindle.v1.ResetResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.ResetRequest,
      dev.spindle.v1.ResetResponse> getResetMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.ResetRequest, dev.spindle.v1.ResetResponse> getResetMethod;
    if ((getResetMethod = EngineServiceGrpc.getResetMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getResetMethod = EngineServiceGrpc.getResetMethod) == null) {
          EngineServiceGrpc.getResetMethod = getResetMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.ResetRequest, dev.spindle.v1.ResetResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Reset"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.ResetRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.ResetResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("Reset"))
              .build();
        }
      }
    }
    return getResetMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.MetricsRequest,
      dev.spindle.v1.MetricsResponse> getMetricsMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Metrics",
      requestType = dev.spindle.v1.MetricsRequest.class,
      responseType = dev.spindle.v1.MetricsResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.MetricsRequest,
      dev.spindle.v1.MetricsResponse> getMetricsMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.MetricsRequest, dev.spindle.v1.MetricsResponse> getMetricsMethod;
    if ((getMetricsMethod = EngineServiceGrpc.getMetricsMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getMetricsMethod = EngineServiceGrpc.getMetricsMethod) == null) {
          EngineServiceGrpc.getMetricsMethod = getMetricsMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.MetricsRequest, dev.spindle.v1.MetricsResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Metrics"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.MetricsRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.MetricsResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("Metrics"))
              .build();
        }
      }
    }
    return getMetricsMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.FollowRequestRequest,
      dev.spindle.v1.FollowRequestResponse> getFollowRequestMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "FollowRequest",
      requestType = dev.spindle.v1.FollowRequestRequest.class,
      responseType = dev.spindle.v1.FollowRequestResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.FollowRequestRequest,
      dev.spindle.v1.FollowRequestResponse> getFollowRequestMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.FollowRequestRequest, dev.spindle.v1.FollowRequestResponse> getFollowRequestMethod;
    if ((getFollowRequestMethod = EngineServiceGrpc.getFollowRequestMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getFollowRequestMethod = EngineServiceGrpc.getFollowRequestMethod) == null) {
          EngineServiceGrpc.getFollowRequestMethod = getFollowRequestMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.FollowRequestRequest, dev.spindle.v1.FollowRequestResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "FollowRequest"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.FollowRequestRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.FollowRequestResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("FollowRequest"))
              .build();
        }
      }
    }
    return getFollowRequestMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.GetModelInfoRequest,
      dev.spindle.v1.GetModelInfoResponse> getGetModelInfoMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "GetModelInfo",
      requestType = dev.spindle.v1.GetModelInfoRequest.class,
      responseType = dev.spindle.v1.GetModelInfoResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.GetModelInfoRequest,
      dev.spindle.v1.GetModelInfoResponse> getGetModelInfoMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.GetModelInfoRequest, dev.spindle.v1.GetModelInfoResponse> getGetModelInfoMethod;
    if ((getGetModelInfoMethod = EngineServiceGrpc.getGetModelInfoMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getGetModelInfoMethod = EngineServiceGrpc.getGetModelInfoMethod) == null) {
          EngineServiceGrpc.getGetModelInfoMethod = getGetModelInfoMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.GetModelInfoRequest, dev.spindle.v1.GetModelInfoResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "GetModelInfo"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.GetModelInfoRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.GetModelInfoResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("GetModelInfo"))
              .build();
        }
      }
    }
    return getGetModelInfoMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.TokenizeRequest,
      dev.spindle.v1.TokenizeResponse> getTokenizeMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Tokenize",
      requestType = dev.spindle.v1.TokenizeRequest.class,
      responseType = dev.spindle.v1.TokenizeResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.TokenizeRequest,
      dev.spindle.v1.TokenizeResponse> getTokenizeMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.TokenizeRequest, dev.spindle.v1.TokenizeResponse> getTokenizeMethod;
    if ((getTokenizeMethod = EngineServiceGrpc.getTokenizeMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getTokenizeMethod = EngineServiceGrpc.getTokenizeMethod) == null) {
          EngineServiceGrpc.getTokenizeMethod = getTokenizeMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.TokenizeRequest, dev.spindle.v1.TokenizeResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Tokenize"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.TokenizeRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.TokenizeResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("Tokenize"))
              .build();
        }
      }
    }
    return getTokenizeMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.spindle.v1.DetokenizeRequest,
      dev.spindle.v1.DetokenizeResponse> getDetokenizeMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Detokenize",
      requestType = dev.spindle.v1.DetokenizeRequest.class,
      responseType = dev.spindle.v1.DetokenizeResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.spindle.v1.DetokenizeRequest,
      dev.spindle.v1.DetokenizeResponse> getDetokenizeMethod() {
    io.grpc.MethodDescriptor<dev.spindle.v1.DetokenizeRequest, dev.spindle.v1.DetokenizeResponse> getDetokenizeMethod;
    if ((getDetokenizeMethod = EngineServiceGrpc.getDetokenizeMethod) == null) {
      synchronized (EngineServiceGrpc.class) {
        if ((getDetokenizeMethod = EngineServiceGrpc.getDetokenizeMethod) == null) {
          EngineServiceGrpc.getDetokenizeMethod = getDetokenizeMethod =
              io.grpc.MethodDescriptor.<dev.spindle.v1.DetokenizeRequest, dev.spindle.v1.DetokenizeResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Detokenize"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.DetokenizeRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.spindle.v1.DetokenizeResponse.getDefaultInstance()))
              .setSchemaDescriptor(new EngineServiceMethodDescriptorSupplier("Detokenize"))
              .build();
        }
      }
    }
    return getDetokenizeMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static EngineServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<EngineServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<EngineServiceStub>() {
        @java.lang.Override
        public EngineServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new EngineServiceStub(channel, callOptions);
        }
      };
    return EngineServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static EngineServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<EngineServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<EngineServiceBlockingStub>() {
        @java.lang.Override
        public EngineServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new EngineServiceBlockingStub(channel, callOptions);
        }
      };
    return EngineServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static EngineServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<EngineServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<EngineServiceFutureStub>() {
        @java.lang.Override
        public EngineServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new EngineServiceFutureStub(channel, callOptions);
        }
      };
    return EngineServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * The Spindle engine: text generation, the engine's own verbs and small model utilities.
   * </pre>
   */
  public interface AsyncService {

    /**
     * <pre>
     * Generates a completion and streams it back. The stream carries deltas (text, token ids and, when asked,
     * logprobs) and ends with exactly one message whose `final` field is set. Cancelling the call, closing
     * the connection or letting its deadline pass aborts the request in the engine at once.
     * Threaded mode only: a stepped server answers FAILED_PRECONDITION.
     * </pre>
     */
    default void generate(dev.spindle.v1.GenerateRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.GenerateResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getGenerateMethod(), responseObserver);
    }

    /**
     * <pre>
     * Queues a request in the engine without waiting for its outputs. In threaded mode follow its outputs
     * with `FollowRequest`; in stepped mode they come back from `Step`.
     * </pre>
     */
    default void addRequest(dev.spindle.v1.AddRequestRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.AddRequestResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getAddRequestMethod(), responseObserver);
    }

    /**
     * <pre>
     * Aborts a request. Idempotent: unknown or already finished ids are accepted and ignored.
     * </pre>
     */
    default void abortRequest(dev.spindle.v1.AbortRequestRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.AbortRequestResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getAbortRequestMethod(), responseObserver);
    }

    /**
     * <pre>
     * Advances the engine by one step and returns every output that step produced.
     * Stepped mode only: a threaded server answers FAILED_PRECONDITION.
     * </pre>
     */
    default void step(dev.spindle.v1.StepRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.StepResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getStepMethod(), responseObserver);
    }

    /**
     * <pre>
     * Aborts every request and clears the engine's state (its KV cache and counters of running work).
     * </pre>
     */
    default void reset(dev.spindle.v1.ResetRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.ResetResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getResetMethod(), responseObserver);
    }

    /**
     * <pre>
     * Returns the engine's counters and the server's load, as typed fields.
     * </pre>
     */
    default void metrics(dev.spindle.v1.MetricsRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.MetricsResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getMetricsMethod(), responseObserver);
    }

    /**
     * <pre>
     * Streams the outputs of a request queued with `AddRequest`, from the point the call is made, until it
     * finishes (the last message has `final` set). Threaded mode only. Cancelling the call does not abort
     * the request: use `AbortRequest` for that.
     * </pre>
     */
    default void followRequest(dev.spindle.v1.FollowRequestRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.FollowRequestResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getFollowRequestMethod(), responseObserver);
    }

    /**
     * <pre>
     * Describes the model being served and the server's configuration.
     * </pre>
     */
    default void getModelInfo(dev.spindle.v1.GetModelInfoRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.GetModelInfoResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getGetModelInfoMethod(), responseObserver);
    }

    /**
     * <pre>
     * Turns text, or chat messages rendered with the model's chat template, into token ids.
     * </pre>
     */
    default void tokenize(dev.spindle.v1.TokenizeRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.TokenizeResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getTokenizeMethod(), responseObserver);
    }

    /**
     * <pre>
     * Turns token ids back into text.
     * </pre>
     */
    default void detokenize(dev.spindle.v1.DetokenizeRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.DetokenizeResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getDetokenizeMethod(), responseObserver);
    }
  }

  /**
   * Base class for the server implementation of the service EngineService.
   * <pre>
   * The Spindle engine: text generation, the engine's own verbs and small model utilities.
   * </pre>
   */
  public static abstract class EngineServiceImplBase
      implements io.grpc.BindableService, AsyncService {

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return EngineServiceGrpc.bindService(this);
    }
  }

  /**
   * A stub to allow clients to do asynchronous rpc calls to service EngineService.
   * <pre>
   * The Spindle engine: text generation, the engine's own verbs and small model utilities.
   * </pre>
   */
  public static final class EngineServiceStub
      extends io.grpc.stub.AbstractAsyncStub<EngineServiceStub> {
    private EngineServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected EngineServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new EngineServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * Generates a completion and streams it back. The stream carries deltas (text, token ids and, when asked,
     * logprobs) and ends with exactly one message whose `final` field is set. Cancelling the call, closing
     * the connection or letting its deadline pass aborts the request in the engine at once.
     * Threaded mode only: a stepped server answers FAILED_PRECONDITION.
     * </pre>
     */
    public void generate(dev.spindle.v1.GenerateRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.GenerateResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncServerStreamingCall(
          getChannel().newCall(getGenerateMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Queues a request in the engine without waiting for its outputs. In threaded mode follow its outputs
     * with `FollowRequest`; in stepped mode they come back from `Step`.
     * </pre>
     */
    public void addRequest(dev.spindle.v1.AddRequestRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.AddRequestResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getAddRequestMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Aborts a request. Idempotent: unknown or already finished ids are accepted and ignored.
     * </pre>
     */
    public void abortRequest(dev.spindle.v1.AbortRequestRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.AbortRequestResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getAbortRequestMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Advances the engine by one step and returns every output that step produced.
     * Stepped mode only: a threaded server answers FAILED_PRECONDITION.
     * </pre>
     */
    public void step(dev.spindle.v1.StepRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.StepResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getStepMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Aborts every request and clears the engine's state (its KV cache and counters of running work).
     * </pre>
     */
    public void reset(dev.spindle.v1.ResetRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.ResetResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getResetMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Returns the engine's counters and the server's load, as typed fields.
     * </pre>
     */
    public void metrics(dev.spindle.v1.MetricsRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.MetricsResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getMetricsMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Streams the outputs of a request queued with `AddRequest`, from the point the call is made, until it
     * finishes (the last message has `final` set). Threaded mode only. Cancelling the call does not abort
     * the request: use `AbortRequest` for that.
     * </pre>
     */
    public void followRequest(dev.spindle.v1.FollowRequestRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.FollowRequestResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncServerStreamingCall(
          getChannel().newCall(getFollowRequestMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Describes the model being served and the server's configuration.
     * </pre>
     */
    public void getModelInfo(dev.spindle.v1.GetModelInfoRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.GetModelInfoResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getGetModelInfoMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Turns text, or chat messages rendered with the model's chat template, into token ids.
     * </pre>
     */
    public void tokenize(dev.spindle.v1.TokenizeRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.TokenizeResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getTokenizeMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Turns token ids back into text.
     * </pre>
     */
    public void detokenize(dev.spindle.v1.DetokenizeRequest request,
        io.grpc.stub.StreamObserver<dev.spindle.v1.DetokenizeResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getDetokenizeMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * A stub to allow clients to do synchronous rpc calls to service EngineService.
   * <pre>
   * The Spindle engine: text generation, the engine's own verbs and small model utilities.
   * </pre>
   */
  public static final class EngineServiceBlockingStub
      extends io.grpc.stub.AbstractBlockingStub<EngineServiceBlockingStub> {
    private EngineServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected EngineServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new EngineServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * Generates a completion and streams it back. The stream carries deltas (text, token ids and, when asked,
     * logprobs) and ends with exactly one message whose `final` field is set. Cancelling the call, closing
     * the connection or letting its deadline pass aborts the request in the engine at once.
     * Threaded mode only: a stepped server answers FAILED_PRECONDITION.
     * </pre>
     */
    public java.util.Iterator<dev.spindle.v1.GenerateResponse> generate(
        dev.spindle.v1.GenerateRequest request) {
      return io.grpc.stub.ClientCalls.blockingServerStreamingCall(
          getChannel(), getGenerateMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Queues a request in the engine without waiting for its outputs. In threaded mode follow its outputs
     * with `FollowRequest`; in stepped mode they come back from `Step`.
     * </pre>
     */
    public dev.spindle.v1.AddRequestResponse addRequest(dev.spindle.v1.AddRequestRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getAddRequestMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Aborts a request. Idempotent: unknown or already finished ids are accepted and ignored.
     * </pre>
     */
    public dev.spindle.v1.AbortRequestResponse abortRequest(dev.spindle.v1.AbortRequestRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getAbortRequestMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Advances the engine by one step and returns every output that step produced.
     * Stepped mode only: a threaded server answers FAILED_PRECONDITION.
     * </pre>
     */
    public dev.spindle.v1.StepResponse step(dev.spindle.v1.StepRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getStepMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Aborts every request and clears the engine's state (its KV cache and counters of running work).
     * </pre>
     */
    public dev.spindle.v1.ResetResponse reset(dev.spindle.v1.ResetRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getResetMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Returns the engine's counters and the server's load, as typed fields.
     * </pre>
     */
    public dev.spindle.v1.MetricsResponse metrics(dev.spindle.v1.MetricsRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getMetricsMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Streams the outputs of a request queued with `AddRequest`, from the point the call is made, until it
     * finishes (the last message has `final` set). Threaded mode only. Cancelling the call does not abort
     * the request: use `AbortRequest` for that.
     * </pre>
     */
    public java.util.Iterator<dev.spindle.v1.FollowRequestResponse> followRequest(
        dev.spindle.v1.FollowRequestRequest request) {
      return io.grpc.stub.ClientCalls.blockingServerStreamingCall(
          getChannel(), getFollowRequestMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Describes the model being served and the server's configuration.
     * </pre>
     */
    public dev.spindle.v1.GetModelInfoResponse getModelInfo(dev.spindle.v1.GetModelInfoRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getGetModelInfoMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Turns text, or chat messages rendered with the model's chat template, into token ids.
     * </pre>
     */
    public dev.spindle.v1.TokenizeResponse tokenize(dev.spindle.v1.TokenizeRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getTokenizeMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Turns token ids back into text.
     * </pre>
     */
    public dev.spindle.v1.DetokenizeResponse detokenize(dev.spindle.v1.DetokenizeRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getDetokenizeMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do ListenableFuture-style rpc calls to service EngineService.
   * <pre>
   * The Spindle engine: text generation, the engine's own verbs and small model utilities.
   * </pre>
   */
  public static final class EngineServiceFutureStub
      extends io.grpc.stub.AbstractFutureStub<EngineServiceFutureStub> {
    private EngineServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected EngineServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new EngineServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * Queues a request in the engine without waiting for its outputs. In threaded mode follow its outputs
     * with `FollowRequest`; in stepped mode they come back from `Step`.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.AddRequestResponse> addRequest(
        dev.spindle.v1.AddRequestRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getAddRequestMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Aborts a request. Idempotent: unknown or already finished ids are accepted and ignored.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.AbortRequestResponse> abortRequest(
        dev.spindle.v1.AbortRequestRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getAbortRequestMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Advances the engine by one step and returns every output that step produced.
     * Stepped mode only: a threaded server answers FAILED_PRECONDITION.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.StepResponse> step(
        dev.spindle.v1.StepRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getStepMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Aborts every request and clears the engine's state (its KV cache and counters of running work).
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.ResetResponse> reset(
        dev.spindle.v1.ResetRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getResetMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Returns the engine's counters and the server's load, as typed fields.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.MetricsResponse> metrics(
        dev.spindle.v1.MetricsRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getMetricsMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Describes the model being served and the server's configuration.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.GetModelInfoResponse> getModelInfo(
        dev.spindle.v1.GetModelInfoRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getGetModelInfoMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Turns text, or chat messages rendered with the model's chat template, into token ids.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.TokenizeResponse> tokenize(
        dev.spindle.v1.TokenizeRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getTokenizeMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Turns token ids back into text.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.spindle.v1.DetokenizeResponse> detokenize(
        dev.spindle.v1.DetokenizeRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getDetokenizeMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_GENERATE = 0;
  private static final int METHODID_ADD_REQUEST = 1;
  private static final int METHODID_ABORT_REQUEST = 2;
  private static final int METHODID_STEP = 3;
  private static final int METHODID_RESET = 4;
  private static final int METHODID_METRICS = 5;
  private static final int METHODID_FOLLOW_REQUEST = 6;
  private static final int METHODID_GET_MODEL_INFO = 7;
  private static final int METHODID_TOKENIZE = 8;
  private static final int METHODID_DETOKENIZE = 9;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final AsyncService serviceImpl;
    private final int methodId;

    MethodHandlers(AsyncService serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_GENERATE:
          serviceImpl.generate((dev.spindle.v1.GenerateRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.GenerateResponse>) responseObserver);
          break;
        case METHODID_ADD_REQUEST:
          serviceImpl.addRequest((dev.spindle.v1.AddRequestRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.AddRequestResponse>) responseObserver);
          break;
        case METHODID_ABORT_REQUEST:
          serviceImpl.abortRequest((dev.spindle.v1.AbortRequestRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.AbortRequestResponse>) responseObserver);
          break;
        case METHODID_STEP:
          serviceImpl.step((dev.spindle.v1.StepRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.StepResponse>) responseObserver);
          break;
        case METHODID_RESET:
          serviceImpl.reset((dev.spindle.v1.ResetRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.ResetResponse>) responseObserver);
          break;
        case METHODID_METRICS:
          serviceImpl.metrics((dev.spindle.v1.MetricsRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.MetricsResponse>) responseObserver);
          break;
        case METHODID_FOLLOW_REQUEST:
          serviceImpl.followRequest((dev.spindle.v1.FollowRequestRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.FollowRequestResponse>) responseObserver);
          break;
        case METHODID_GET_MODEL_INFO:
          serviceImpl.getModelInfo((dev.spindle.v1.GetModelInfoRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.GetModelInfoResponse>) responseObserver);
          break;
        case METHODID_TOKENIZE:
          serviceImpl.tokenize((dev.spindle.v1.TokenizeRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.TokenizeResponse>) responseObserver);
          break;
        case METHODID_DETOKENIZE:
          serviceImpl.detokenize((dev.spindle.v1.DetokenizeRequest) request,
              (io.grpc.stub.StreamObserver<dev.spindle.v1.DetokenizeResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        default:
          throw new AssertionError();
      }
    }
  }

  public static final io.grpc.ServerServiceDefinition bindService(AsyncService service) {
    return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
        .addMethod(
          getGenerateMethod(),
          io.grpc.stub.ServerCalls.asyncServerStreamingCall(
            new MethodHandlers<
              dev.spindle.v1.GenerateRequest,
              dev.spindle.v1.GenerateResponse>(
                service, METHODID_GENERATE)))
        .addMethod(
          getAddRequestMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.AddRequestRequest,
              dev.spindle.v1.AddRequestResponse>(
                service, METHODID_ADD_REQUEST)))
        .addMethod(
          getAbortRequestMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.AbortRequestRequest,
              dev.spindle.v1.AbortRequestResponse>(
                service, METHODID_ABORT_REQUEST)))
        .addMethod(
          getStepMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.StepRequest,
              dev.spindle.v1.StepResponse>(
                service, METHODID_STEP)))
        .addMethod(
          getResetMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.ResetRequest,
              dev.spindle.v1.ResetResponse>(
                service, METHODID_RESET)))
        .addMethod(
          getMetricsMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.MetricsRequest,
              dev.spindle.v1.MetricsResponse>(
                service, METHODID_METRICS)))
        .addMethod(
          getFollowRequestMethod(),
          io.grpc.stub.ServerCalls.asyncServerStreamingCall(
            new MethodHandlers<
              dev.spindle.v1.FollowRequestRequest,
              dev.spindle.v1.FollowRequestResponse>(
                service, METHODID_FOLLOW_REQUEST)))
        .addMethod(
          getGetModelInfoMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.GetModelInfoRequest,
              dev.spindle.v1.GetModelInfoResponse>(
                service, METHODID_GET_MODEL_INFO)))
        .addMethod(
          getTokenizeMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.TokenizeRequest,
              dev.spindle.v1.TokenizeResponse>(
                service, METHODID_TOKENIZE)))
        .addMethod(
          getDetokenizeMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.spindle.v1.DetokenizeRequest,
              dev.spindle.v1.DetokenizeResponse>(
                service, METHODID_DETOKENIZE)))
        .build();
  }

  private static abstract class EngineServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    EngineServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return dev.spindle.v1.EngineProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("EngineService");
    }
  }

  private static final class EngineServiceFileDescriptorSupplier
      extends EngineServiceBaseDescriptorSupplier {
    EngineServiceFileDescriptorSupplier() {}
  }

  private static final class EngineServiceMethodDescriptorSupplier
      extends EngineServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final java.lang.String methodName;

    EngineServiceMethodDescriptorSupplier(java.lang.String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (EngineServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new EngineServiceFileDescriptorSupplier())
              .addMethod(getGenerateMethod())
              .addMethod(getAddRequestMethod())
              .addMethod(getAbortRequestMethod())
              .addMethod(getStepMethod())
              .addMethod(getResetMethod())
              .addMethod(getMetricsMethod())
              .addMethod(getFollowRequestMethod())
              .addMethod(getGetModelInfoMethod())
              .addMethod(getTokenizeMethod())
              .addMethod(getDetokenizeMethod())
              .build();
        }
      }
    }
    return result;
  }
}
