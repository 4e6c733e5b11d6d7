package spindle

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "spindle.dev/clients/go/spindlev1"
)

// These tests need no Spindle server: a local gRPC server streams small messages, and a relay between it
// and the client counts the HTTP/2 PING frames the client sends while it reads them.

const flowMessages = 40

type streamer struct {
	pb.UnimplementedEngineServiceServer
}

func (streamer) Generate(_ *pb.GenerateRequest, s grpc.ServerStreamingServer[pb.GenerateResponse]) error {
	for i := 0; i < flowMessages; i++ {
		msg := &pb.GenerateResponse{RequestId: "r", Deltas: []*pb.OutputDelta{{Text: " x", TokenIds: []int32{int32(i)}}}}
		if err := s.Send(msg); err != nil {
			return err
		}
		time.Sleep(4 * time.Millisecond)
	}
	return s.Send(&pb.GenerateResponse{RequestId: "r", Final: &pb.FinalOutput{
		Branches: []*pb.BranchResult{{FinishReason: pb.FinishReason_FINISH_REASON_LENGTH}}}})
}

// pingCounter relays one TCP connection to upstream and counts the client's PING frames (not ACKs).
type pingCounter struct {
	mu     sync.Mutex
	pings  int
	frames int
	addr   string
}

func startRelay(t *testing.T, upstream string) *pingCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pc := &pingCounter{addr: ln.Addr().String()}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				conn.Close()
				return
			}
			go func() { io.Copy(conn, up); conn.Close() }()
			go func() { pc.parse(io.TeeReader(conn, up)); up.Close() }()
		}
	}()
	return pc
}

func (pc *pingCounter) parse(r io.Reader) {
	preface := make([]byte, 24)
	if _, err := io.ReadFull(r, preface); err != nil || !bytes.HasPrefix(preface, []byte("PRI * HTTP/2.0")) {
		io.Copy(io.Discard, r)
		return
	}
	header := make([]byte, 9)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			return
		}
		length := int(binary.BigEndian.Uint32(append([]byte{0}, header[:3]...)))
		if _, err := io.CopyN(io.Discard, r, int64(length)); err != nil {
			return
		}
		pc.mu.Lock()
		pc.frames++
		if header[3] == 0x6 && header[4]&0x1 == 0 { // PING without ACK
			pc.pings++
		}
		pc.mu.Unlock()
	}
}

func (pc *pingCounter) counts() (frames, pings int) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.frames, pc.pings
}

func startStreamer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterEngineServiceServer(srv, streamer{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func readAll(t *testing.T, rpc pb.EngineServiceClient) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := rpc.Generate(ctx, &pb.GenerateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return n
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
}

// The control: with grpc-go's default options the client probes the bandwidth-delay product with PINGs
// while it reads the stream.
func TestDefaultChannelPingsWhileReadingAStream(t *testing.T) {
	relay := startRelay(t, startStreamer(t))
	conn, err := grpc.NewClient(relay.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if n := readAll(t, pb.NewEngineServiceClient(conn)); n != flowMessages+1 {
		t.Fatalf("got %d messages, want %d", n, flowMessages+1)
	}
	if _, pings := relay.counts(); pings < 1 {
		t.Fatalf("the relay saw no PING from a default channel")
	}
}

func TestDialReadsAStreamWithoutProbePings(t *testing.T) {
	relay := startRelay(t, startStreamer(t))
	c, err := Dial(relay.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := readAll(t, c.Raw()); n != flowMessages+1 {
		t.Fatalf("got %d messages, want %d", n, flowMessages+1)
	}
	frames, pings := relay.counts()
	if frames == 0 {
		t.Fatal("the relay parsed no frame")
	}
	if pings != 0 {
		t.Fatalf("Dial's channel sent %d PINGs while reading %d messages", pings, flowMessages+1)
	}
}
