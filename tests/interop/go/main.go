// Command qotpinterop puts the Go reference implementation of QOTP
// (github.com/qo-proto/qotp) behind the same command line and the same
// per-stream test protocol as the Python project's `qotp serve` and
// `qotp send`, so that each side can be run against the other.
//
// On streams 0..K-1 of one connection:
//
//   - digest: the client sends a u64 little-endian length N, then N bytes, and
//     does not close; the server answers "sha256=<hex> bytes=<N>\n" and closes.
//   - echo: the server echoes every byte; the client closes once everything
//     came back; the server closes when it sees the client's close.
//
// The reference is driven from a single goroutine with its own Listen/Flush
// pair, not with Listener.Loop: Loop stops for good on the first datagram the
// reference cannot decode, while here such errors are counted, reported on
// stderr and survived, so that one bad packet shows up as a diagnostic rather
// than as a silent hang. Every wait has a deadline and a panic inside the
// reference becomes an error report instead of a stack dump with no JSON.
//
// Only API present in both v0.2.18 and v0.2.19 is used (Listen, WithSeed,
// WithNetworkConn, Dial, DialWithCrypto, Conn.Stream, Stream.Read/Write/Close,
// Listener.Listen/Flush/Close), because the test harness can pin either
// version. The two versions end a stream's reads differently (v0.2.18 returns
// the last bytes together with io.EOF and io.ErrUnexpectedEOF afterwards,
// v0.2.19 returns the bytes, then io.EOF), so any read error after the bytes
// were consumed counts as "the peer closed".
package main

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/qo-proto/qotp"
)

const (
	// maxWaitNano caps one blocking read so deadlines are checked at least
	// this often; it equals the reference's own idle wait (MinDeadLine).
	maxWaitNano = uint64(100 * time.Millisecond)
	// lingerTime keeps the client's loop turning after the last check so the
	// final ACKs and CLOSEs leave before the socket goes away.
	lingerTime = 300 * time.Millisecond
	// maxReportedErrors bounds the stderr lines spent on reference errors.
	maxReportedErrors = 20
	// maxReferenceErrors ends a run whose socket keeps failing instead of
	// spinning on it until the deadline.
	maxReferenceErrors = 100000
	headerBytes        = 8
	// keyLogEnvironmentVariable names the server's key-log file, as in the Python CLI
	// (only the server writes one: the initiator's secret is not known when the
	// reference logs it).
	keyLogEnvironmentVariable = "QOTP_KEYLOGFILE"
)

var errTimeout = errors.New("timeout")

// driver owns the reference listener and turns its loop from one goroutine.
type driver struct {
	listener        *qotp.Listener
	referenceErrors int
}

func (d *driver) noteError(err error) {
	d.referenceErrors++
	if d.referenceErrors <= maxReportedErrors {
		fmt.Fprintf(os.Stderr, "reference error %d: %v\n", d.referenceErrors, err)
	}
}

// run turns the listener (read at most one datagram, call step, flush) until
// step reports done, step fails, the deadline passes or the reference panics.
// A zero deadline means no limit.
func (d *driver) run(deadline time.Time, step func(s *qotp.Stream) (bool, error)) (err error) {
	defer func() {
		if recovered := recover(); recovered != nil {
			fmt.Fprintf(os.Stderr, "reference panicked: %v\n%s", recovered, debug.Stack())
			err = fmt.Errorf("reference panicked: %v", recovered)
		}
	}()
	wait := maxWaitNano
	for {
		now := time.Now()
		if !deadline.IsZero() && now.After(deadline) {
			return errTimeout
		}
		if wait > maxWaitNano {
			wait = maxWaitNano
		}
		stream, listenErr := d.listener.Listen(wait, uint64(now.UnixNano()))
		if listenErr != nil {
			d.noteError(listenErr)
			if d.referenceErrors >= maxReferenceErrors {
				return fmt.Errorf("giving up after %d reference errors, last: %w",
					d.referenceErrors, listenErr)
			}
		}
		done, stepErr := step(stream)
		if stepErr != nil {
			return stepErr
		}
		wait = d.listener.Flush(uint64(time.Now().UnixNano()))
		if done {
			return nil
		}
	}
}

// openSocket binds a UDP socket itself (rather than through WithListenAddr)
// so the actual port of a ":0" listen address is known.
func openSocket(address string) (*net.UDPConn, error) {
	udpAddress, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", udpAddress)
}

func decodeKey(text string) ([]byte, error) {
	raw, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(text), "0x"))
	if err != nil {
		return nil, err
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("want 32 bytes, got %d", len(raw))
	}
	return raw, nil
}

// readAll drains what the stream has in order; closed reports a read error
// (the peer's close, in either version's spelling).
func readAll(stream *qotp.Stream) (data []byte, closed bool) {
	for {
		chunk, err := stream.Read()
		data = append(data, chunk...)
		if err != nil {
			return data, true
		}
		if len(chunk) == 0 {
			return data, false
		}
	}
}

// writeSome hands as much of pending to the stream as its send buffer takes.
func writeSome(stream *qotp.Stream, pending []byte) ([]byte, error) {
	for len(pending) > 0 {
		n, err := stream.Write(pending)
		if err != nil {
			return pending, err
		}
		if n == 0 {
			break
		}
		pending = pending[n:]
	}
	return pending, nil
}

// ---------------------------------------------------------------- server

type serverStream struct {
	stream     *qotp.Stream
	header     []byte
	haveHeader bool
	remaining  uint64
	total      uint64
	digest     hash.Hash
	out        []byte
	closing    bool
	done       bool
}

func serve(arguments []string) int {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	listen := flags.String("listen", "127.0.0.1:0", "HOST:PORT to listen on (port 0: any)")
	seedHex := flags.String("seed-hex", "", "identity private key as 64 hex digits")
	mode := flags.String("mode", "digest", "digest or echo")
	maxSeconds := flags.Float64("max-seconds", 0, "exit after this long (0: never)")
	_ = flags.Parse(arguments)
	if *mode != "digest" && *mode != "echo" {
		fmt.Fprintln(os.Stderr, "mode must be digest or echo")
		return 2
	}

	// WithSeed rather than WithSeedStrHex: the latter writes through a nil
	// array pointer in the reference and panics.
	options := []qotp.ListenFunc{}
	if *seedHex != "" {
		seed, err := decodeKey(*seedHex)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad --seed-hex: %v\n", err)
			return 2
		}
		options = append(options, qotp.WithSeed([32]byte(seed)))
	}
	// The same variable as the Python CLI: secrets for `qotp decrypt` and Wireshark.
	if path := os.Getenv(keyLogEnvironmentVariable); path != "" {
		keyLog, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "key log: %v\n", err)
			return 1
		}
		defer keyLog.Close()
		options = append(options, qotp.WithKeyLogWriter(keyLog))
	}
	socket, err := openSocket(*listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen: %v\n", err)
		return 1
	}
	options = append(options, qotp.WithNetworkConn(qotp.NewUDPNetworkConn(socket)))
	listener, err := qotp.Listen(options...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen: %v\n", err)
		return 1
	}
	defer listener.Close()
	local := socket.LocalAddr().(*net.UDPAddr).AddrPort()
	fmt.Printf("pubkey=%x\nlistening=%s\n", listener.PubKey().Bytes(), local)
	_ = os.Stdout.Sync()

	var deadline time.Time
	if *maxSeconds > 0 {
		deadline = time.Now().Add(time.Duration(*maxSeconds * float64(time.Second)))
	}
	d := &driver{listener: listener}
	states := map[*qotp.Stream]*serverStream{}
	active := []*serverStream{}
	err = d.run(deadline, func(stream *qotp.Stream) (bool, error) {
		if stream != nil && states[stream] == nil {
			state := &serverStream{stream: stream, digest: sha256.New()}
			states[stream] = state
			active = append(active, state)
		}
		kept := active[:0]
		for _, state := range active {
			if *mode == "digest" {
				state.stepDigest()
			} else {
				state.stepEcho()
			}
			if !state.done {
				kept = append(kept, state)
			}
		}
		active = kept
		return false, nil
	})
	if errors.Is(err, errTimeout) {
		return 0
	}
	fmt.Fprintf(os.Stderr, "server stopped: %v\n", err)
	return 1
}

func (state *serverStream) finish(format string, values ...any) {
	fmt.Fprintf(os.Stderr, "stream %d: "+format+"\n",
		append([]any{state.stream.StreamID()}, values...)...)
	state.stream.Close()
	state.done = true
	state.out = nil
}

// flushOut writes what is pending and closes once all of it is queued.
func (state *serverStream) flushOut() {
	var err error
	state.out, err = writeSome(state.stream, state.out)
	if err != nil {
		state.finish("write refused with %d bytes pending: %v", len(state.out), err)
		return
	}
	if state.closing && len(state.out) == 0 {
		state.stream.Close()
		state.done = true
	}
}

func (state *serverStream) stepDigest() {
	if state.closing {
		state.flushOut()
		return
	}
	data, closed := readAll(state.stream)
	if !state.haveHeader {
		need := headerBytes - len(state.header)
		take := min(need, len(data))
		state.header = append(state.header, data[:take]...)
		data = data[take:]
		if len(state.header) == headerBytes {
			state.haveHeader = true
			state.total = binary.LittleEndian.Uint64(state.header)
			state.remaining = state.total
		}
	}
	if uint64(len(data)) > state.remaining {
		state.finish("peer sent %d bytes past its announced length", uint64(len(data))-state.remaining)
		return
	}
	state.digest.Write(data)
	state.remaining -= uint64(len(data))
	if state.haveHeader && state.remaining == 0 {
		state.out = fmt.Appendf(nil, "sha256=%x bytes=%d\n", state.digest.Sum(nil), state.total)
		state.closing = true
		state.flushOut()
		return
	}
	if closed {
		if !state.haveHeader && len(state.header) == 0 {
			// A stream object the reference re-created for a late packet
			// (an ACK or a repeated CLOSE) after it had removed the stream.
			state.stream.Close()
			state.done = true
			return
		}
		state.finish("peer closed before sending everything (%d bytes missing)", state.remaining)
	}
}

func (state *serverStream) stepEcho() {
	if !state.closing {
		data, closed := readAll(state.stream)
		state.out = append(state.out, data...)
		state.closing = closed
	}
	state.flushOut()
}

// ---------------------------------------------------------------- client

type clientStream struct {
	stream    *qotp.Stream
	size      int
	pending   []byte
	expected  [sha256.Size]byte
	reply     []byte
	received  hash.Hash
	count     int
	closeSent bool
	done      bool
}

type report struct {
	Ok         bool    `json:"ok"`
	Streams    int     `json:"streams"`
	TotalBytes int     `json:"total_bytes"`
	ElapsedS   float64 `json:"elapsed_s"`
	MBs        float64 `json:"mb_s"`
	Error      string  `json:"error,omitempty"`
}

// streamData is the deterministic test payload of one stream.
func streamData(streamID uint32, size int) []byte {
	var seed [32]byte
	copy(seed[:], "qotp-interop")
	binary.LittleEndian.PutUint32(seed[28:], streamID)
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(seed).Read(data)
	return data
}

func client(arguments []string) int {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	connect := flags.String("connect", "", "HOST:PORT of the server")
	streams := flags.Int("streams", 1, "number of streams (ids 0..K-1)")
	size := flags.Int("bytes", 1024, "bytes per stream")
	mode := flags.String("mode", "digest", "digest or echo")
	pubkeyHex := flags.String("pubkey", "", "server identity public key (hex): dial 0-RTT")
	timeoutSeconds := flags.Float64("timeout", 120, "give up after this many seconds")
	_ = flags.Parse(arguments)
	if *mode != "digest" && *mode != "echo" || *streams < 1 || *size < 0 || *connect == "" {
		fmt.Fprintln(os.Stderr, "need --connect, --streams >= 1, --bytes >= 0, --mode digest|echo")
		return 2
	}
	remote, err := netip.ParseAddrPort(*connect)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad --connect: %v\n", err)
		return 2
	}
	var peerKey *ecdh.PublicKey
	if *pubkeyHex != "" {
		raw, err := decodeKey(*pubkeyHex)
		if err == nil {
			peerKey, err = ecdh.X25519().NewPublicKey(raw)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad --pubkey: %v\n", err)
			return 2
		}
	}

	result := report{Streams: *streams, TotalBytes: *streams * *size}
	err = runClient(remote, peerKey, *streams, *size, *mode,
		time.Duration(*timeoutSeconds*float64(time.Second)), &result)
	if err != nil {
		result.Error = err.Error()
	} else {
		result.Ok = true
	}
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
	if result.Ok {
		return 0
	}
	return 1
}

func runClient(remote netip.AddrPort, peerKey *ecdh.PublicKey, streamCount, size int,
	mode string, timeout time.Duration, result *report) error {
	local := "0.0.0.0:0"
	if remote.Addr().Is6() && !remote.Addr().Is4In6() {
		local = "[::]:0"
	}
	socket, err := openSocket(local)
	if err != nil {
		return err
	}
	listener, err := qotp.Listen(qotp.WithNetworkConn(qotp.NewUDPNetworkConn(socket)))
	if err != nil {
		return err
	}
	defer listener.Close()

	states := make([]*clientStream, streamCount)
	for index := range states {
		data := streamData(uint32(index), size)
		state := &clientStream{size: size, expected: sha256.Sum256(data), received: sha256.New()}
		if mode == "digest" {
			state.pending = binary.LittleEndian.AppendUint64(make([]byte, 0, headerBytes+size),
				uint64(size))
			state.pending = append(state.pending, data...)
		} else {
			state.pending = data
		}
		states[index] = state
	}

	start := time.Now()
	deadline := start.Add(timeout)
	var conn *qotp.Conn
	if peerKey != nil {
		conn, err = listener.DialWithCrypto(remote, peerKey)
	} else {
		conn, err = listener.Dial(remote)
	}
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	for index, state := range states {
		state.stream = conn.Stream(uint32(index))
	}

	d := &driver{listener: listener}
	var failure error
	err = d.run(deadline, func(*qotp.Stream) (bool, error) {
		finished := true
		for _, state := range states {
			if !state.done {
				if mode == "digest" {
					failure = state.stepDigest()
				} else {
					failure = state.stepEcho()
				}
				if failure != nil {
					return true, failure
				}
			}
			finished = finished && state.done
		}
		return finished, nil
	})
	elapsed := time.Since(start)
	result.ElapsedS = elapsed.Seconds()
	if result.ElapsedS > 0 {
		result.MBs = float64(result.TotalBytes) / result.ElapsedS / 1e6
	}
	if err == nil {
		lingerUntil := time.Now().Add(lingerTime)
		_ = d.run(deadline.Add(lingerTime), func(*qotp.Stream) (bool, error) {
			return time.Now().After(lingerUntil), nil
		})
	}
	if d.referenceErrors > 0 {
		fmt.Fprintf(os.Stderr, "reference errors: %d\n", d.referenceErrors)
	}
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("timeout after %.1f s (%s)", elapsed.Seconds(), progress(states, mode))
	}
	return err
}

func progress(states []*clientStream, mode string) string {
	parts := []string{}
	for index, state := range states {
		if mode == "digest" {
			parts = append(parts, fmt.Sprintf("stream %d: %d unsent, reply %q",
				index, len(state.pending), state.reply))
		} else {
			parts = append(parts, fmt.Sprintf("stream %d: %d unsent, %d of %d echoed, close sent %v",
				index, len(state.pending), state.count, state.size, state.closeSent))
		}
	}
	return strings.Join(parts, "; ")
}

func (state *clientStream) stepDigest() error {
	var err error
	if state.pending, err = writeSome(state.stream, state.pending); err != nil {
		return fmt.Errorf("stream %d: write: %w", state.stream.StreamID(), err)
	}
	data, closed := readAll(state.stream)
	state.reply = append(state.reply, data...)
	if end := bytes.IndexByte(state.reply, '\n'); end >= 0 {
		want := fmt.Sprintf("sha256=%x bytes=%d\n", state.expected, state.size)
		if got := string(state.reply); got != want {
			return fmt.Errorf("stream %d: got %q, want %q", state.stream.StreamID(), got, want)
		}
		state.done = true
		return nil
	}
	if closed {
		return fmt.Errorf("stream %d: closed before the digest line (got %q)",
			state.stream.StreamID(), state.reply)
	}
	return nil
}

func (state *clientStream) stepEcho() error {
	var err error
	if state.pending, err = writeSome(state.stream, state.pending); err != nil {
		return fmt.Errorf("stream %d: write: %w", state.stream.StreamID(), err)
	}
	data, closed := readAll(state.stream)
	state.received.Write(data)
	state.count += len(data)
	if state.count > state.size {
		return fmt.Errorf("stream %d: %d bytes echoed, only %d sent",
			state.stream.StreamID(), state.count, state.size)
	}
	if state.count == state.size && len(state.pending) == 0 && !state.closeSent {
		if !bytes.Equal(state.received.Sum(nil), state.expected[:]) {
			return fmt.Errorf("stream %d: echo differs from what was sent", state.stream.StreamID())
		}
		state.stream.Close()
		state.closeSent = true
	}
	if closed {
		if !state.closeSent {
			return fmt.Errorf("stream %d: server closed after %d of %d bytes",
				state.stream.StreamID(), state.count, state.size)
		}
		state.done = true
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: qotpinterop server|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		os.Exit(serve(os.Args[2:]))
	case "client":
		os.Exit(client(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "usage: qotpinterop server|client [flags]")
		os.Exit(2)
	}
}
