package main

import (
	"encoding/json"
	"testing"
	"time"
)

func TestRecordIsTheTelemetryShape(t *testing.T) {
	r := rng(7)
	b := appendRecord(nil, "dev-00042", 17, time.UnixMilli(1764052800250), &r)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	if m["device_id"] != "dev-00042" || m["seq"] != 17.0 || m["ts"] != 1764052800.25 {
		t.Fatalf("wrong identity fields: %s", b)
	}
	for _, c := range channels {
		v, ok := m[c.name].(float64)
		if !ok || v < c.base-10*c.sd || v > c.base+10*c.sd {
			t.Fatalf("channel %s = %v: %s", c.name, m[c.name], b)
		}
	}
	if m["device_type"] != "pump" || m["label"] != 0.0 || m["anomaly"] != nil || len(m) != 10 {
		t.Fatalf("wrong ground-truth fields: %s", b)
	}
}

func TestPlanKeepsEachDeviceOnOneConnectionAndSplitsTheCount(t *testing.T) {
	c := &config{connections: 3, devs: 7, count: 23, devicePrefix: "dev"}
	devices, quotas := plan(c)
	seen := map[string]bool{}
	var total uint64
	for conn := range devices {
		for i, d := range devices[conn] {
			if seen[d] {
				t.Fatalf("device %s on two connections", d)
			}
			seen[d] = true
			total += quotas[conn][i]
		}
	}
	if len(seen) != 7 || total != 23 {
		t.Fatalf("devices %d, messages %d; want 7, 23", len(seen), total)
	}
	if deviceName("dev", 3, 100000) != "dev-00003" || deviceName("dev", 3, 1000001) != "dev-0000003" {
		t.Fatalf("device names differ from the simulator's")
	}
}
