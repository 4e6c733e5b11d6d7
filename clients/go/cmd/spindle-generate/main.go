// Command spindle-generate streams a completion from a Spindle server to stdout.
//
//	go run ./cmd/spindle-generate -target 127.0.0.1:50051 -max-tokens 32 "Once upon a time"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	spindle "spindle.dev/clients/go"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address (host:port)")
	maxTokens := flag.Int("max-tokens", 32, "most tokens to generate")
	temperature := flag.Float64("temperature", 0, "sampling temperature (0: greedy)")
	timeout := flag.Duration("timeout", 60*time.Second, "deadline of the call")
	flag.Parse()
	prompt := strings.Join(flag.Args(), " ")
	if prompt == "" {
		fmt.Fprintln(os.Stderr, "usage: spindle-generate [flags] PROMPT")
		os.Exit(2)
	}
	if err := run(*target, prompt, int32(*maxTokens), float32(*temperature), *timeout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(target, prompt string, maxTokens int32, temperature float32, timeout time.Duration) error {
	client, err := spindle.Dial(target)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg := spindle.Greedy(maxTokens)
	cfg.Temperature = &temperature
	stream, err := client.Stream(ctx, spindle.Text(prompt), cfg, "")
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, d := range msg.GetDeltas() {
			fmt.Print(d.GetText())
		}
		if f := msg.GetFinal(); f != nil {
			u := f.GetUsage()
			fmt.Fprintf(os.Stderr, "\n[%s: %d prompt + %d completion tokens, first token %.1f ms, total %.1f ms]\n",
				f.GetBranches()[0].GetFinishReason(), u.GetPromptTokens(), u.GetCompletionTokens(),
				u.GetTimeToFirstTokenMs(), u.GetTotalTimeMs())
		}
	}
}
