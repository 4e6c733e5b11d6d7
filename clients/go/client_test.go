package spindle

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "spindle.dev/clients/go/spindlev1"
)

// The live tests talk to servers started by tests/polyglot (one threaded, one stepped), which passes
// their addresses and the Python SyncClient's greedy result for the same input through the environment.
type expected struct {
	Prompt       string  `json:"prompt"`
	MaxTokens    int32   `json:"max_tokens"`
	TokenIDs     []int32 `json:"token_ids"`
	Text         string  `json:"text"`
	FinishReason string  `json:"finish_reason"`
}

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run these tests through tests/polyglot (make test-polyglot), which starts the servers", name)
	}
	return v
}

func dial(t *testing.T, envName string) *Client {
	t.Helper()
	c, err := Dial(env(t, envName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func want(t *testing.T) expected {
	t.Helper()
	var e expected
	if err := json.Unmarshal([]byte(env(t, "SPINDLE_TEST_EXPECTED")), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGreedyGenerateMatchesPythonClient(t *testing.T) {
	c, e := dial(t, "SPINDLE_TEST_TARGET"), want(t)
	r, err := c.Generate(ctxT(t), Text(e.Prompt), Greedy(e.MaxTokens))
	if err != nil {
		t.Fatal(err)
	}
	if !equalIDs(r.TokenIDs, e.TokenIDs) {
		t.Fatalf("token ids %v, the Python client got %v", r.TokenIDs, e.TokenIDs)
	}
	if r.Text != e.Text {
		t.Fatalf("text %q, the Python client got %q", r.Text, e.Text)
	}
	if r.FinishReason.String() != e.FinishReason {
		t.Fatalf("finish reason %s, the Python client got %s", r.FinishReason, e.FinishReason)
	}
	if r.Usage.GetCompletionTokens() != int32(len(e.TokenIDs)) || r.Final.GetEffectiveConfig().GetTemperature() != 0 {
		t.Fatalf("usage %v / effective config %v do not match the request", r.Usage, r.Final.GetEffectiveConfig())
	}
}

func TestCancelEndsStreamAndAbortsRequest(t *testing.T) {
	c := dial(t, "SPINDLE_TEST_TARGET")
	before, err := c.Metrics(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	cfg := Greedy(400)
	cfg.IgnoreEos = true
	stream, err := c.Stream(ctx, Text("A long story:"), cfg, "go-cancel")
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetFinal() != nil {
		t.Fatalf("first message %v, error %v", first, err)
	}
	cancel()
	var end error
	for i := 0; i < 1000 && end == nil; i++ {
		var msg *pb.GenerateResponse
		msg, end = stream.Recv()
		if msg.GetFinal() != nil {
			t.Fatalf("the stream finished normally after the cancel: %v", msg.GetFinal())
		}
	}
	if !IsCanceled(end) {
		t.Fatalf("stream ended with %v, want Canceled", end)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := c.Metrics(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if m.GetAbortedRequests() > before.GetAbortedRequests() && m.GetLiveRequests() == 0 && m.GetRunningRequests() == 0 {
			if m.GetKvPagesUsed() != 0 {
				t.Fatalf("%d KV pages still used after the abort", m.GetKvPagesUsed())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed the request aborted: before %v, now %v", before, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInvalidArgumentNamesTheField(t *testing.T) {
	c := dial(t, "SPINDLE_TEST_TARGET")
	cfg := Greedy(4)
	bad := float32(-1)
	cfg.Temperature = &bad
	_, err := c.Generate(ctxT(t), Text("hello"), cfg)
	e, ok := AsError(err)
	if !ok || e.Code != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	if v, ok := e.Field("temperature"); !ok || v.Field != "config.temperature" {
		t.Fatalf("no violation names temperature: %+v", e.FieldViolations)
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("status.Code does not see through *Error: %v", status.Code(err))
	}
}

func TestSteppedModeAddRequestAndStep(t *testing.T) {
	c, e := dial(t, "SPINDLE_TEST_STEPPED_TARGET"), want(t)
	ctx := ctxT(t)
	if _, err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	added, err := c.AddRequest(ctx, "go-stepped", Text(e.Prompt), Greedy(e.MaxTokens))
	if err != nil {
		t.Fatal(err)
	}
	if added.GetRequestId() != "go-stepped" || len(added.GetPromptTokenIds()) == 0 {
		t.Fatalf("AddRequest answered %v", added)
	}
	_, err = c.AddRequest(ctx, "go-stepped", Text(e.Prompt), Greedy(e.MaxTokens))
	if !IsAlreadyExists(err) {
		t.Fatalf("a duplicate id gave %v, want AlreadyExists", err)
	}
	r, err := c.StepUntilDone(ctx, "go-stepped", 10*int(e.MaxTokens)+10)
	if err != nil {
		t.Fatal(err)
	}
	if !equalIDs(r.TokenIDs, e.TokenIDs) || r.Text != e.Text {
		t.Fatalf("stepped result %v %q, the Python client got %v %q", r.TokenIDs, r.Text, e.TokenIDs, e.Text)
	}
	step, err := c.Step(ctx)
	if err != nil || !step.GetEngineEmpty() {
		t.Fatalf("after the request finished: step %v, error %v", step, err)
	}
	threaded := dial(t, "SPINDLE_TEST_TARGET")
	if _, err := threaded.Step(ctx); !IsFailedPrecondition(err) {
		t.Fatalf("Step on a threaded server gave %v, want FailedPrecondition", err)
	}
}

func TestAccumulatorCollectsBranches(t *testing.T) {
	acc := NewAccumulator()
	acc.Add("r", []*pb.OutputDelta{{Index: 0, Text: "he", TokenIds: []int32{1}}, {Index: 1, Text: "x", TokenIds: []int32{7}}}, nil)
	if _, err := acc.Result(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("an unfinished stream gave %v", err)
	}
	acc.Add("", []*pb.OutputDelta{{Index: 0, Text: "llo", TokenIds: []int32{2}}}, &pb.FinalOutput{Branches: []*pb.BranchResult{
		{Index: 0, FinishReason: pb.FinishReason_FINISH_REASON_STOP, MatchedStop: &pb.BranchResult_StopString{StopString: "!"}},
		{Index: 1, FinishReason: pb.FinishReason_FINISH_REASON_LENGTH},
	}})
	r, err := acc.Result()
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestID != "r" || r.Text != "hello" || !equalIDs(r.TokenIDs, []int32{1, 2}) || r.MatchedStopString != "!" ||
		r.FinishReason != pb.FinishReason_FINISH_REASON_STOP || len(r.Branches) != 2 || r.Branches[1].Text != "x" {
		t.Fatalf("collected %+v", r)
	}
}

func TestFromErrorReadsDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "bad config").WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "config.top_p", Description: "must be in (0, 1]"}}},
		&errdetails.ErrorInfo{Reason: "INVALID_CONFIG", Domain: "spindle.dev"})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := AsError(FromError(st.Err()))
	if !ok || e.Code != codes.InvalidArgument || e.Reason != "INVALID_CONFIG" {
		t.Fatalf("got %+v", e)
	}
	if v, ok := e.Field("top_p"); !ok || v.Description != "must be in (0, 1]" {
		t.Fatalf("field violation %+v", e.FieldViolations)
	}
	if FromError(nil) != nil || Code(io.EOF) != codes.Unknown {
		t.Fatal("nil or status-less errors are not handled")
	}
}

func TestFollowChatTokenizeAndModelInfo(t *testing.T) {
	c, e := dial(t, "SPINDLE_TEST_TARGET"), want(t)
	ctx := ctxT(t)
	info, err := c.ModelInfo(ctx)
	if err != nil || info.GetMode() != pb.ServerMode_SERVER_MODE_THREADED || !info.GetHasChatTemplate() {
		t.Fatalf("model info %v, error %v", info, err)
	}
	ids, err := c.Tokenize(ctx, e.Prompt)
	if err != nil || len(ids) == 0 {
		t.Fatalf("tokenize gave %v, %v", ids, err)
	}
	// Token ids in, the same greedy continuation out.
	r, err := c.Generate(ctx, Tokens(ids...), Greedy(e.MaxTokens))
	if err != nil || !equalIDs(r.TokenIDs, e.TokenIDs) {
		t.Fatalf("generation from token ids: %v, error %v", r, err)
	}
	text, err := c.Detokenize(ctx, r.TokenIDs, false)
	if err != nil || text != e.Text {
		t.Fatalf("detokenize gave %q, %v; want %q", text, err, e.Text)
	}
	chat, err := c.Generate(ctx, Chat(Message("user", "Hello there")), Greedy(4))
	if err != nil || len(chat.TokenIDs) == 0 || chat.Usage.GetPromptTokens() <= 2 {
		t.Fatalf("chat generation: %v, error %v", chat, err)
	}
	// AddRequest, then follow its outputs to the end.
	cfg := Greedy(24)
	cfg.IgnoreEos = true
	added, err := c.AddRequest(ctx, "go-follow", Text(e.Prompt), cfg)
	if err != nil {
		t.Fatal(err)
	}
	followed, err := c.Follow(ctx, added.GetRequestId())
	switch {
	case IsNotFound(err): // it finished before FollowRequest reached the server
	case err != nil:
		t.Fatal(err)
	case followed.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH || followed.Usage.GetCompletionTokens() != 24:
		t.Fatalf("followed request ended with %v", followed)
	}
}
