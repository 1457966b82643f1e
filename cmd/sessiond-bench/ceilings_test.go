package main

import (
	"bytes"
	"encoding/csv"
	"testing"
)

// TestCSVLines reads redis-benchmark --csv --cluster output as it prints
// it: the masters first, in plain text, then the CSV records.
func TestCSVLines(t *testing.T) {
	out := []byte("Cluster has 3 master nodes:\n\nMaster 0: 6c00 127.0.0.1:17312\nMaster 1: d6be 127.0.0.1:17313\n\n" +
		`"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"` + "\n" +
		`"SET","7462.69","0.490","0.024","0.103","2.223","10.271","16.255"` + "\n" +
		`"GET","7751.94","0.560","0.024","0.127","2.911","5.159","9.151"` + "\n")
	if _, err := csv.NewReader(bytes.NewReader(out)).ReadAll(); err == nil {
		t.Fatal("the raw output parses as CSV: the test does not show the problem")
	}
	recs, err := csv.NewReader(bytes.NewReader(csvLines(out))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[1][0] != "SET" || recs[2][6] != "5.159" {
		t.Errorf("records %q; want the header, SET and GET", recs)
	}
}

func TestSumGauge(t *testing.T) {
	text := "# HELP asynq_queue_size Size of the queue.\n# TYPE asynq_queue_size gauge\n" +
		`asynq_queue_size{queue="sessiond:webhooks:0-1"} 252` + "\n" +
		`asynq_queue_size{queue="sessiond:webhooks:1-3"} 1.5e3` + "\n" +
		`asynq_queue_size_total{queue="x"} 7` + "\n" +
		"asynq_queue_size 3\n" +
		`asynq_tasks_enqueued_total{queue="sessiond:webhooks:0-1",state="scheduled"} 252` + "\n"
	if got := sumGauge(text, "asynq_queue_size"); got != 1755 {
		t.Errorf("sumGauge = %d, want 1755 (252 + 1500 + 3)", got)
	}
	if got := sumGauge(text, "sessiond_outbox_backlog"); got != -1 {
		t.Errorf("sumGauge of an absent metric = %d, want -1", got)
	}
}
