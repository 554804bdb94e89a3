package main

import (
	"strconv"
	"time"
)

// channel is one sensor channel of the simulated fleet (simulator/fleet.py): baseline and noise.
type channel struct {
	name     string
	base, sd float64
	decimals int
}

// The simulator's four channels, rounded as it rounds them (4 decimals).
var channels = []channel{
	{"temperature", 60.0, 0.4, 4},
	{"current", 1.5, 0.03, 4},
	{"vibration", 0.30, 0.008, 4},
	{"pressure", 3.0, 0.03, 4},
}

// rng is xorshift64*: cheap, per connection, no locks; the values only need to look like readings.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return x * 2685821657736338717
}

// noise is roughly standard normal (sum of four uniforms, scaled).
func (r *rng) noise() float64 {
	s := 0.0
	for i := 0; i < 4; i++ {
		s += float64(r.next()>>11) / float64(1<<53)
	}
	return (s - 2.0) * 1.7320508
}

// appendRecord appends the telemetry JSON the simulator publishes (streamtrain/telemetry.py), e.g.
//
//	{"device_id":"dev-00042","ts":1764052800.25,"seq":17,"temperature":71.3,"current":1.92,
//	 "vibration":0.31,"pressure":3.02,"device_type":"pump","label":0,"anomaly":null}
func appendRecord(b []byte, device string, seq uint64, now time.Time, r *rng) []byte {
	b = append(b, `{"device_id":"`...)
	b = append(b, device...)
	b = append(b, `","ts":`...)
	b = strconv.AppendFloat(b, float64(now.UnixMilli())/1000.0, 'f', -1, 64)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	for _, c := range channels {
		b = append(b, `,"`...)
		b = append(b, c.name...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, c.base+c.sd*r.noise(), 'f', c.decimals, 64)
	}
	b = append(b, `,"device_type":"pump","label":0,"anomaly":null}`...)
	return b
}

// topicFor is the MQTT topic a device publishes its telemetry on.
func topicFor(device string) string {
	return "devices/" + device + "/telemetry"
}

// deviceName is the simulator's naming: prefix, dash, index zero-padded to at least 5 digits.
func deviceName(prefix string, i, total int) string {
	width := len(strconv.Itoa(total - 1))
	if width < 5 {
		width = 5
	}
	s := strconv.Itoa(i)
	for len(s) < width {
		s = "0" + s
	}
	return prefix + "-" + s
}
