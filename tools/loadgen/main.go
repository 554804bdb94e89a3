// loadgen publishes the fleet's telemetry JSON over MQTT QoS 1 as fast as the broker accepts it
// (or at a target rate), to measure the broker and what sits behind it without the client being
// the bottleneck. Each device publishes on one connection only, so its seq order holds on the wire.
// The result is one JSON line on stdout; events (connection lost, ...) are JSON lines on stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"
)

type config struct {
	host, clientPrefix, devicePrefix  string
	username, password, ackedOut      string
	port, connections, inflight, devs int
	count, seqStart                   uint64
	rate                              float64
	duration, drain                   time.Duration
	qos                               byte
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loadgen [flags]\n\nPublishes the telemetry JSON of a simulated fleet over MQTT (QoS 1 by default) and prints one\n"+
			"JSON summary line: sent, acked, failed, elapsed_s, msg_per_s, ack_p50_ms, ack_p99_ms.\n"+
			"Devices are spread over the connections (device i on connection i mod N), each device's seq in order.\n"+
			"Exit status 1 when any publish was not acknowledged, 2 on bad flags or no connection.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.host, "host", "127.0.0.1", "MQTT broker host")
	fs.IntVar(&c.port, "port", 1883, "MQTT broker port")
	fs.IntVar(&c.connections, "connections", 4, "MQTT connections (N)")
	fs.IntVar(&c.inflight, "inflight", 64, "publishes waiting for their PUBACK per connection (K)")
	fs.IntVar(&c.devs, "devices", 1000, "devices (M), spread over the connections")
	fs.StringVar(&c.devicePrefix, "device-prefix", "dev", "device ids are <prefix>-<index, 5+ digits>, as the simulator names them")
	fs.Uint64Var(&c.count, "count", 0, "total messages (split evenly over the devices); 0 = use --duration")
	fs.DurationVar(&c.duration, "duration", 0, "publish for this long (e.g. 10s) when --count is 0")
	fs.Float64Var(&c.rate, "rate", 0, "target messages per second over all connections; 0 = flat out")
	fs.Uint64Var(&c.seqStart, "seq-start", 0, "first seq of every device (continue an earlier run)")
	qos := fs.Int("qos", 1, "MQTT QoS of the publishes (0 or 1)")
	fs.StringVar(&c.clientPrefix, "client-prefix", "streamtrain-loadgen", "MQTT client id prefix")
	fs.StringVar(&c.username, "username", "", "MQTT user name (optional)")
	fs.StringVar(&c.password, "password", "", "MQTT password (optional; prefer the LOADGEN_PASSWORD env variable)")
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "after the last publish, wait this long for outstanding acknowledgements")
	fs.StringVar(&c.ackedOut, "acked-out", "", "write every acknowledged \"device_id<TAB>seq\" to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.password == "" {
		c.password = os.Getenv("LOADGEN_PASSWORD")
	}
	c.qos = byte(*qos)
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %v", fs.Args())
	case *qos != 0 && *qos != 1:
		return nil, fmt.Errorf("--qos must be 0 or 1")
	case c.connections < 1 || c.inflight < 1 || c.devs < 1:
		return nil, fmt.Errorf("--connections, --inflight and --devices must be at least 1")
	case c.devs < c.connections:
		return nil, fmt.Errorf("--devices (%d) must be at least --connections (%d): each connection needs a device", c.devs, c.connections)
	case c.count == 0 && c.duration <= 0:
		return nil, fmt.Errorf("give --count or --duration")
	case c.rate < 0:
		return nil, fmt.Errorf("--rate must not be negative")
	}
	return c, nil
}

func logEvent(event string, kv ...any) {
	m := map[string]any{"event": event, "time": time.Now().UTC().Format(time.RFC3339Nano)}
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	fmt.Fprintln(os.Stderr, string(b))
}

// plan gives each connection its devices (device i on connection i mod N) and, with --count,
// each device its number of messages (the first count mod M devices get one more).
func plan(c *config) ([][]string, [][]uint64) {
	devices := make([][]string, c.connections)
	quotas := make([][]uint64, c.connections)
	for i := 0; i < c.devs; i++ {
		conn := i % c.connections
		devices[conn] = append(devices[conn], deviceName(c.devicePrefix, i, c.devs))
		if c.count > 0 {
			q := c.count / uint64(c.devs)
			if uint64(i) < c.count%uint64(c.devs) {
				q++
			}
			quotas[conn] = append(quotas[conn], q)
		}
	}
	if c.count == 0 {
		quotas = make([][]uint64, c.connections)
	}
	return devices, quotas
}

func percentile(sorted []uint32, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / 1000.0
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err == flag.ErrHelp {
		os.Exit(0)
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	devices, quotas := plan(cfg)
	pubs := make([]*publisher, cfg.connections)
	var connecting sync.WaitGroup
	connectErrs := make(chan error, cfg.connections)
	connectCtx, connectCancel := context.WithTimeout(ctx, 30*time.Second)
	for i := range pubs {
		pubs[i] = newPublisher(i, cfg, devices[i], quotas[i], cfg.rate/float64(cfg.connections))
		connecting.Add(1)
		go func(p *publisher) {
			defer connecting.Done()
			if err := p.connect(connectCtx); err != nil {
				connectErrs <- err
			}
		}(pubs[i])
	}
	connecting.Wait()
	connectCancel()
	close(connectErrs)
	if err := <-connectErrs; err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: cannot connect to %s:%d: %v\n", cfg.host, cfg.port, err)
		os.Exit(2)
	}

	start := time.Now()
	deadline := start.Add(cfg.duration)
	var running sync.WaitGroup
	for _, p := range pubs {
		running.Add(1)
		go func(p *publisher) { defer running.Done(); p.run(ctx, start, deadline) }(p)
	}
	running.Wait()

	var sent, ackedN, failed uint64
	var latency []uint32
	end := start
	firstErr := ""
	for _, p := range pubs {
		sent += p.sent.Load()
		ackedN += p.acks.Load()
		failed += p.failed.Load()
		latency = append(latency, p.latency...)
		if p.lastAck.After(end) {
			end = p.lastAck
		}
		if e, ok := p.firstErr.Load().(string); ok && firstErr == "" {
			firstErr = e
		}
	}
	if cfg.ackedOut != "" {
		if err := writeAcked(cfg.ackedOut, pubs); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: writing --acked-out:", err)
			os.Exit(2)
		}
	}
	sort.Slice(latency, func(i, j int) bool { return latency[i] < latency[j] })
	elapsed := end.Sub(start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(ackedN) / elapsed
	}
	summary := map[string]any{
		"sent": sent, "acked": ackedN, "failed": failed, "unacked": sent - ackedN - failed,
		"elapsed_s": round(elapsed, 3), "msg_per_s": round(rate, 1),
		"ack_p50_ms": round(percentile(latency, 0.50), 3), "ack_p99_ms": round(percentile(latency, 0.99), 3),
		"connections": cfg.connections, "inflight": cfg.inflight, "devices": cfg.devs, "qos": cfg.qos,
		"target_rate": cfg.rate, "stopped_by_signal": ctx.Err() != nil,
	}
	if firstErr != "" {
		summary["first_error"] = firstErr
	}
	b, _ := json.Marshal(summary)
	fmt.Println(string(b))
	if ackedN != sent && cfg.qos > 0 {
		os.Exit(1)
	}
}

func writeAcked(path string, pubs []*publisher) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, p := range pubs {
		for _, a := range p.ackedIDs {
			fmt.Fprintf(w, "%s\t%d\n", a.device, a.seq)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func round(v float64, places int) float64 {
	p := 1.0
	for i := 0; i < places; i++ {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}
