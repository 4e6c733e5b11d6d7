// Package spindle is a thin Go client of Spindle's spindle.v1.EngineService.
//
// The generated messages and stubs live in spindle.dev/clients/go/spindlev1 (from protos/ by
// scripts/generate-stubs.sh); this package adds what every caller writes anyway: building prompts,
// collecting a Generate stream into a Result, and turning gRPC statuses into *Error values that expose
// the status code, the ErrorInfo reason and the BadRequest field violations.
package spindle

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "spindle.dev/clients/go/spindlev1"
)

// Client talks to one Spindle server over one gRPC channel. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	rpc  pb.EngineServiceClient
}

// HTTP/2 flow-control windows of a channel (per stream, per connection). Dial fixes them at these sizes
// instead of grpc-go's 64 KiB grown by bandwidth-delay probing, which pings the server for nearly every
// message of a generation stream (many small messages).
const (
	StreamWindowBytes     = 4 << 20
	ConnectionWindowBytes = 16 << 20
)

// Dial opens a channel to target ("host:port"). Without options the channel is plaintext, as a
// Spindle server listens by default; pass grpc.WithTransportCredentials to use TLS. The flow-control
// windows are fixed (StreamWindowBytes, ConnectionWindowBytes) unless opts set them.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	opts = append([]grpc.DialOption{grpc.WithInitialWindowSize(StreamWindowBytes),
		grpc.WithInitialConnWindowSize(ConnectionWindowBytes)}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, rpc: pb.NewEngineServiceClient(conn)}, nil
}

// Close closes the channel; calls in flight end with a Canceled status.
func (c *Client) Close() error { return c.conn.Close() }

// Raw returns the generated stub, for calls this package does not wrap.
func (c *Client) Raw() pb.EngineServiceClient { return c.rpc }

// Text is a plain text prompt.
func Text(text string) *pb.Prompt { return &pb.Prompt{Kind: &pb.Prompt_Text{Text: text}} }

// Chat is a chat conversation, rendered with the model's chat template.
func Chat(messages ...*pb.ChatMessage) *pb.Prompt {
	return &pb.Prompt{Kind: &pb.Prompt_Chat{Chat: &pb.ChatMessages{Messages: messages}}}
}

// Message is one chat message.
func Message(role, content string) *pb.ChatMessage {
	return &pb.ChatMessage{Role: role, Content: content}
}

// Tokens is a prompt of token ids, used as they are.
func Tokens(ids ...int32) *pb.Prompt {
	return &pb.Prompt{Kind: &pb.Prompt_TokenIds{TokenIds: &pb.TokenIds{TokenIds: ids}}}
}

// Greedy is a configuration for greedy decoding of at most maxTokens tokens.
func Greedy(maxTokens int32) *pb.GenerationConfig {
	t := float32(0)
	return &pb.GenerationConfig{Temperature: &t, MaxTokens: &maxTokens}
}

// Result is a finished generation, every delta of branch 0 collected (all branches in Branches).
type Result struct {
	RequestID    string
	Text         string
	TokenIDs     []int32
	Logprobs     []*pb.TokenLogprob
	FinishReason pb.FinishReason
	// MatchedStopString / MatchedStopTokenID tell which stop ended branch 0 (HasStopTokenID when a token did).
	MatchedStopString  string
	MatchedStopTokenID int32
	HasStopTokenID     bool
	Usage              *pb.Usage
	Branches           []BranchOutput
	Final              *pb.FinalOutput
}

// BranchOutput is the collected output of one branch.
type BranchOutput struct {
	Text     string
	TokenIDs []int32
	Logprobs []*pb.TokenLogprob
	Result   *pb.BranchResult
}

// Stream is a running Generate call. Recv returns io.EOF after the message carrying Final.
type Stream struct {
	inner  grpc.ServerStreamingClient[pb.GenerateResponse]
	cancel context.CancelFunc
	done   bool
}

// Recv returns the next message of the stream; errors are *Error values (or io.EOF at the end).
func (s *Stream) Recv() (*pb.GenerateResponse, error) {
	if s.done {
		return nil, io.EOF
	}
	msg, err := s.inner.Recv()
	if err != nil {
		s.done = true
		s.cancel()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, FromError(err)
	}
	if msg.GetFinal() != nil {
		s.done = true
	}
	return msg, nil
}

// Cancel cancels the call: the server aborts the request in the engine at once.
func (s *Stream) Cancel() { s.done = true; s.cancel() }

// Stream starts a Generate call and returns its stream of deltas. Cancel it (or ctx) to abort the request.
func (c *Client) Stream(ctx context.Context, prompt *pb.Prompt, cfg *pb.GenerationConfig, requestID string,
	opts ...grpc.CallOption) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	inner, err := c.rpc.Generate(ctx, &pb.GenerateRequest{RequestId: requestID, Prompt: prompt, Config: cfg}, opts...)
	if err != nil {
		cancel()
		return nil, FromError(err)
	}
	return &Stream{inner: inner, cancel: cancel}, nil
}

// Generate runs a generation to its end and returns the collected Result.
func (c *Client) Generate(ctx context.Context, prompt *pb.Prompt, cfg *pb.GenerationConfig,
	opts ...grpc.CallOption) (*Result, error) {
	stream, err := c.Stream(ctx, prompt, cfg, "", opts...)
	if err != nil {
		return nil, err
	}
	defer stream.Cancel()
	acc := NewAccumulator()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		acc.Add(msg.GetRequestId(), msg.GetDeltas(), msg.GetFinal())
	}
	return acc.Result()
}

// ErrIncomplete is returned when a stream ended without its final output.
var ErrIncomplete = errors.New("spindle: stream ended without a final output")

// Accumulator collects the deltas of one request (from Generate, FollowRequest or Step) into a Result.
type Accumulator struct {
	requestID string
	branches  map[int32]*BranchOutput
	text      map[int32]*strings.Builder
	final     *pb.FinalOutput
}

// NewAccumulator returns an empty Accumulator.
func NewAccumulator() *Accumulator {
	return &Accumulator{branches: map[int32]*BranchOutput{}, text: map[int32]*strings.Builder{}}
}

// Add folds one message (its request id, deltas and final output, which may be nil) in.
func (a *Accumulator) Add(requestID string, deltas []*pb.OutputDelta, final *pb.FinalOutput) {
	if requestID != "" {
		a.requestID = requestID
	}
	for _, d := range deltas {
		b := a.branch(d.GetIndex())
		a.text[d.GetIndex()].WriteString(d.GetText())
		b.TokenIDs = append(b.TokenIDs, d.GetTokenIds()...)
		b.Logprobs = append(b.Logprobs, d.GetLogprobs()...)
	}
	if final != nil {
		a.final = final
	}
}

// Done tells whether the final output has arrived.
func (a *Accumulator) Done() bool { return a.final != nil }

func (a *Accumulator) branch(i int32) *BranchOutput {
	if b, ok := a.branches[i]; ok {
		return b
	}
	b := &BranchOutput{}
	a.branches[i] = b
	a.text[i] = &strings.Builder{}
	return b
}

// Result returns the collected Result; an error when the stream ended before its final output.
func (a *Accumulator) Result() (*Result, error) {
	if a.final == nil {
		return nil, ErrIncomplete
	}
	n := int32(len(a.final.GetBranches()))
	for _, br := range a.final.GetBranches() {
		a.branch(br.GetIndex()).Result = br
		if br.GetIndex()+1 > n {
			n = br.GetIndex() + 1
		}
	}
	r := &Result{RequestID: a.requestID, Usage: a.final.GetUsage(), Final: a.final}
	for i := int32(0); i < n; i++ {
		b := a.branch(i)
		b.Text = a.text[i].String()
		r.Branches = append(r.Branches, *b)
	}
	if len(r.Branches) > 0 {
		b0 := r.Branches[0]
		r.Text, r.TokenIDs, r.Logprobs = b0.Text, b0.TokenIDs, b0.Logprobs
		if b0.Result != nil {
			r.FinishReason = b0.Result.GetFinishReason()
			r.MatchedStopString = b0.Result.GetStopString()
			if m, ok := b0.Result.GetMatchedStop().(*pb.BranchResult_StopTokenId); ok {
				r.MatchedStopTokenID, r.HasStopTokenID = m.StopTokenId, true
			}
		}
	}
	return r, nil
}
