package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// pending is one publish waiting for its PUBACK.
type pending struct {
	token  mqtt.Token
	device int // index into the connection's devices
	seq    uint64
	at     time.Time
}

// acked is one acknowledged (device, seq), kept for --acked-out.
type acked struct {
	device string
	seq    uint64
}

// publisher is one MQTT connection publishing for its own devices, in seq order per device,
// with at most cfg.inflight publishes waiting for their PUBACK.
type publisher struct {
	id       int
	cfg      *config
	devices  []string
	quota    []uint64 // messages per device (count mode); nil in duration mode
	rate     float64  // this connection's share of the target rate; 0 = flat out
	client   mqtt.Client
	slots    chan struct{}
	queue    chan pending
	rnd      rng
	sent     atomic.Uint64
	acks     atomic.Uint64
	failed   atomic.Uint64
	latency  []uint32 // ack latency per acknowledged publish, microseconds
	ackedIDs []acked
	lastAck  time.Time
	firstErr atomic.Value
}

func newPublisher(id int, cfg *config, devices []string, quota []uint64, rate float64) *publisher {
	return &publisher{
		id: id, cfg: cfg, devices: devices, quota: quota, rate: rate,
		slots: make(chan struct{}, cfg.inflight),
		queue: make(chan pending, cfg.inflight+1),
		rnd:   rng(0x9E3779B97F4A7C15 ^ uint64(id+1)*0xBF58476D1CE4E5B9),
	}
}

// connect opens a new clean session, retrying with back-off until ctx ends.
func (p *publisher) connect(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		opts := mqtt.NewClientOptions().
			AddBroker(fmt.Sprintf("tcp://%s:%d", p.cfg.host, p.cfg.port)).
			SetClientID(fmt.Sprintf("%s-%d-%d", p.cfg.clientPrefix, p.id, time.Now().UnixNano()%1e9)).
			SetProtocolVersion(4).
			SetCleanSession(true).
			SetAutoReconnect(false).
			SetKeepAlive(30 * time.Second).
			SetConnectTimeout(10 * time.Second).
			SetWriteTimeout(30 * time.Second).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				logEvent("mqtt_connection_lost", "connection", p.id, "error", err.Error())
			})
		if p.cfg.username != "" {
			opts.SetUsername(p.cfg.username).SetPassword(p.cfg.password)
		}
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		tok.Wait()
		if tok.Error() == nil {
			p.client = c
			if attempt > 1 {
				logEvent("mqtt_reconnected", "connection", p.id, "attempts", attempt)
			}
			return nil
		}
		if attempt == 1 || attempt%20 == 0 {
			logEvent("mqtt_connect_failed", "connection", p.id, "attempt", attempt, "error", tok.Error().Error())
		}
		select {
		case <-ctx.Done():
			return tok.Error()
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// collect waits for each publish's outcome in publish order and frees its in-flight slot.
func (p *publisher) collect(done *sync.WaitGroup) {
	defer done.Done()
	for m := range p.queue {
		<-m.token.Done()
		now := time.Now()
		if err := m.token.Error(); err != nil {
			p.failed.Add(1)
			p.firstErr.CompareAndSwap(nil, err.Error())
		} else {
			p.acks.Add(1)
			p.lastAck = now
			p.latency = append(p.latency, uint32(now.Sub(m.at).Microseconds()))
			if p.cfg.ackedOut != "" {
				p.ackedIDs = append(p.ackedIDs, acked{p.devices[m.device], m.seq})
			}
		}
		<-p.slots
	}
}

// run publishes until the quota is met, the deadline passes or ctx ends, then waits for the
// outstanding acknowledgements (at most cfg.drain).
func (p *publisher) run(ctx context.Context, start time.Time, deadline time.Time) {
	var collector sync.WaitGroup
	collector.Add(1)
	go p.collect(&collector)
	defer func() {
		close(p.queue)
		if !waitOrTimeout(&collector, p.cfg.drain) {
			logEvent("drain_timeout", "connection", p.id, "waited_s", p.cfg.drain.Seconds())
			p.client.Disconnect(0) // fails the publishes still waiting, so the collector ends
			collector.Wait()
			return
		}
		p.client.Disconnect(250)
	}()
	buf := make([]byte, 0, 512)
	var n uint64 // messages handed to the client by this connection
	for round := uint64(0); ; round++ {
		progressed := false
		for d, device := range p.devices {
			if p.quota != nil && round >= p.quota[d] {
				continue
			}
			if p.quota == nil && !time.Now().Before(deadline) {
				return
			}
			if ctx.Err() != nil {
				return
			}
			progressed = true
			if p.rate > 0 {
				due := start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
				if wait := time.Until(due); wait > time.Millisecond {
					time.Sleep(wait)
				}
			}
			if !p.client.IsConnectionOpen() {
				p.client.Disconnect(0)
				if p.connect(ctx) != nil {
					return
				}
			}
			select {
			case p.slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			seq := p.cfg.seqStart + round
			now := time.Now()
			buf = appendRecord(buf[:0], device, seq, now, &p.rnd)
			payload := make([]byte, len(buf))
			copy(payload, buf)
			tok := p.client.Publish(topicFor(device), p.cfg.qos, false, payload)
			p.queue <- pending{token: tok, device: d, seq: seq, at: now}
			p.sent.Add(1)
			n++
		}
		if p.quota != nil && !progressed {
			return
		}
	}
}

func waitOrTimeout(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
