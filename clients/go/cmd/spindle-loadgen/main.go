// Command spindle-loadgen runs concurrent greedy streams against a Spindle server and prints, as JSON, when
// each stream started and when each of its tokens arrived (seconds from the start of the run), and the CPU
// time the process spent during the run (user + system, all its threads). It is the native-client side of
// bench/bench_grpc.py.
//
//	go run ./cmd/spindle-loadgen -target 127.0.0.1:50051 -streams 16 -max-tokens 64 "Once upon a time"
//
// With -chat the prompt goes as one user message of a chat (rendered with the model's chat template).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	spindle "spindle.dev/clients/go"
	pb "spindle.dev/clients/go/spindlev1"
)

type trace struct {
	Start  float64   `json:"start"`
	Tokens []float64 `json:"tokens"`
}

type report struct {
	WallS   float64 `json:"wall_s"`
	CPUS    float64 `json:"cpu_s"`
	Streams []trace `json:"streams"`
}

// cpuSeconds is the CPU time (user + system) this process has spent so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address (host:port)")
	streams := flag.Int("streams", 1, "concurrent streams")
	maxTokens := flag.Int("max-tokens", 64, "tokens per stream (EOS ignored)")
	rounds := flag.Int("rounds", 1, "runs, one JSON report per line")
	timeout := flag.Duration("timeout", 10*time.Minute, "deadline of each call")
	chat := flag.Bool("chat", false, "send the prompt as one user message of a chat")
	flag.Parse()
	text := strings.Join(flag.Args(), " ")
	prompt := spindle.Text(text)
	if *chat {
		prompt = spindle.Chat(spindle.Message("user", text))
	}
	if text == "" || *streams < 1 || *maxTokens < 1 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "usage: spindle-loadgen [-streams N] [-max-tokens N] [-rounds N] [-chat] PROMPT")
		os.Exit(2)
	}
	client, err := spindle.Dial(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer client.Close()
	if _, err := one(client, prompt, 1, *timeout, time.Now()); err != nil { // connect before timing
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	for r := 0; r < *rounds; r++ {
		rep, err := run(client, prompt, *streams, int32(*maxTokens), *timeout)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func run(client *spindle.Client, prompt *pb.Prompt, streams int, maxTokens int32, timeout time.Duration) (*report, error) {
	t0, cpu0 := time.Now(), cpuSeconds()
	traces := make([]trace, streams)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range traces {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tr, err := one(client, prompt, maxTokens, timeout, t0)
			traces[i], errs[i] = tr, err
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &report{WallS: time.Since(t0).Seconds(), CPUS: cpuSeconds() - cpu0, Streams: traces}, nil
}

func one(client *spindle.Client, prompt *pb.Prompt, maxTokens int32, timeout time.Duration, t0 time.Time) (trace, error) {
	tr := trace{Start: time.Since(t0).Seconds()}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg := spindle.Greedy(maxTokens)
	cfg.IgnoreEos = true
	stream, err := client.Stream(ctx, prompt, cfg, "")
	if err != nil {
		return tr, err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return tr, nil
		}
		if err != nil {
			return tr, err
		}
		now := time.Since(t0).Seconds()
		for _, d := range msg.GetDeltas() {
			for range d.GetTokenIds() {
				tr.Tokens = append(tr.Tokens, now)
			}
		}
	}
}
