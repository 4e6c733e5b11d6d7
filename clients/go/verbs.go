package spindle

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	pb "spindle.dev/clients/go/spindlev1"
)

// AddRequest queues a request without waiting for its outputs (follow them with Follow in threaded mode,
// or collect them from Step in stepped mode). requestID may be empty: the server assigns one.
func (c *Client) AddRequest(ctx context.Context, requestID string, prompt *pb.Prompt, cfg *pb.GenerationConfig,
	opts ...grpc.CallOption) (*pb.AddRequestResponse, error) {
	resp, err := c.rpc.AddRequest(ctx, &pb.AddRequestRequest{RequestId: requestID, Prompt: prompt, Config: cfg}, opts...)
	return resp, FromError(err)
}

// AbortRequest aborts a request; it reports whether the request was still live.
func (c *Client) AbortRequest(ctx context.Context, requestID string, opts ...grpc.CallOption) (bool, error) {
	resp, err := c.rpc.AbortRequest(ctx, &pb.AbortRequestRequest{RequestId: requestID}, opts...)
	if err != nil {
		return false, FromError(err)
	}
	return resp.GetWasLive(), nil
}

// Step advances a stepped server's engine by one step and returns what it produced.
func (c *Client) Step(ctx context.Context, opts ...grpc.CallOption) (*pb.StepResponse, error) {
	resp, err := c.rpc.Step(ctx, &pb.StepRequest{}, opts...)
	return resp, FromError(err)
}

// Reset aborts every request and clears the engine; it returns how many live requests were aborted.
func (c *Client) Reset(ctx context.Context, opts ...grpc.CallOption) (int32, error) {
	resp, err := c.rpc.Reset(ctx, &pb.ResetRequest{}, opts...)
	if err != nil {
		return 0, FromError(err)
	}
	return resp.GetAbortedRequests(), nil
}

// Metrics returns the engine's counters and the server's load.
func (c *Client) Metrics(ctx context.Context, opts ...grpc.CallOption) (*pb.MetricsResponse, error) {
	resp, err := c.rpc.Metrics(ctx, &pb.MetricsRequest{}, opts...)
	return resp, FromError(err)
}

// ModelInfo describes the model being served and the server's configuration.
func (c *Client) ModelInfo(ctx context.Context, opts ...grpc.CallOption) (*pb.GetModelInfoResponse, error) {
	resp, err := c.rpc.GetModelInfo(ctx, &pb.GetModelInfoRequest{}, opts...)
	return resp, FromError(err)
}

// Tokenize returns the token ids of a text.
func (c *Client) Tokenize(ctx context.Context, text string, opts ...grpc.CallOption) ([]int32, error) {
	resp, err := c.rpc.Tokenize(ctx, &pb.TokenizeRequest{Input: &pb.TokenizeRequest_Text{Text: text}}, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetTokenIds(), nil
}

// Detokenize returns the text of token ids.
func (c *Client) Detokenize(ctx context.Context, ids []int32, skipSpecial bool, opts ...grpc.CallOption) (string, error) {
	resp, err := c.rpc.Detokenize(ctx, &pb.DetokenizeRequest{TokenIds: ids, SkipSpecialTokens: skipSpecial}, opts...)
	if err != nil {
		return "", FromError(err)
	}
	return resp.GetText(), nil
}

// Follow collects the outputs of a request queued with AddRequest (threaded mode) until it finishes.
func (c *Client) Follow(ctx context.Context, requestID string, opts ...grpc.CallOption) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.FollowRequest(ctx, &pb.FollowRequestRequest{RequestId: requestID}, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	acc := NewAccumulator()
	for !acc.Done() {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, FromError(err)
		}
		acc.Add(msg.GetRequestId(), msg.GetDeltas(), msg.GetFinal())
	}
	return acc.Result()
}

// StepUntilDone drives a stepped server with Step until the request finishes (or maxSteps steps pass)
// and returns its collected Result. Outputs of other requests produced meanwhile are dropped.
func (c *Client) StepUntilDone(ctx context.Context, requestID string, maxSteps int, opts ...grpc.CallOption) (*Result, error) {
	acc := NewAccumulator()
	for i := 0; i < maxSteps && !acc.Done(); i++ {
		resp, err := c.Step(ctx, opts...)
		if err != nil {
			return nil, err
		}
		for _, out := range resp.GetOutputs() {
			if out.GetRequestId() == requestID {
				acc.Add(out.GetRequestId(), out.GetDeltas(), out.GetFinal())
			}
		}
	}
	return acc.Result()
}
