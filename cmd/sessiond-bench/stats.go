package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// latencies summarises a set of durations.
type latencies struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	Min float64 `json:"min_ms"`
}

// summarise sorts ds (in place) and returns its percentiles in ms.
func summarise(ds []time.Duration) latencies {
	if len(ds) == 0 {
		return latencies{}
	}
	slices.Sort(ds)
	return latencies{
		N:   len(ds),
		P50: ms(percentile(ds, 0.50)),
		P99: ms(percentile(ds, 0.99)),
		Max: ms(ds[len(ds)-1]),
		Min: ms(ds[0]),
	}
}

// percentile is the nearest-rank percentile of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// ratio is a/b rounded; 0 (no ratio) when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return round(a/b, 3)
}

// human formats x with a sensible number of digits.
func human(x float64) string {
	switch ax := math.Abs(x); {
	case ax >= 1000:
		return fmt.Sprintf("%.0f", x)
	case ax >= 10:
		return fmt.Sprintf("%.1f", x)
	case ax >= 0.1 || ax == 0:
		return fmt.Sprintf("%.2f", x)
	default: // two significant digits: 0.0040 cores is not 0.00
		return fmt.Sprintf("%.2g", x)
	}
}

// perSecond is n over d.
func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round(float64(n)/d.Seconds(), 1)
}
