package adminapi

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAPI measures requests/s and latency of a signed GET and of a
// create through the admin port, 16 concurrent clients over HTTP on
// loopback, one redis-server:
//
//	go test ./adminapi -run='^$' -bench=BenchmarkAPI -benchtime=1x
func BenchmarkAPI(b *testing.B) {
	a := newEnv(b)
	id := a.create("bench-get").ID
	a.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	run := func(name string, build func(i int) *http.Request) {
		const workers, per = 16, 1000
		var (
			mu  sync.Mutex
			lat []time.Duration
			n   atomic.Int64
			wg  sync.WaitGroup
		)
		start := time.Now()
		for range workers {
			wg.Go(func() {
				mine := make([]time.Duration, 0, per)
				for range per {
					req := build(int(n.Add(1)))
					t := time.Now()
					resp, err := a.client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 300 {
						b.Errorf("%s: %d", name, resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(t))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.Logf("%s: %.0f req/s, p50 %.2f ms, p99 %.2f ms", name, float64(len(lat))/elapsed.Seconds(), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]))
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), strings.ReplaceAll(name, " ", "-")+"-req/s")
	}
	for b.Loop() {
		run("signed GET", func(int) *http.Request { return a.build("GET", "/v1/sessions/"+id, "") })
		run("create", func(i int) *http.Request {
			return a.build("POST", "/v1/sessions", fmt.Sprintf(`{"ref_id":"bench-%d","person":{"first_name":"Ada"}}`, i))
		})
	}
}
