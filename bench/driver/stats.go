package driver

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Stats summarises samples of one quantity.
type Stats struct {
	N                          int
	Median, P90, P99, Min, Max float64
}

// Summarise computes order statistics (nearest-rank) of xs.
func Summarise(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Stats{N: len(s), Median: q(0.5), P90: q(0.9), P99: q(0.99), Min: s[0], Max: s[len(s)-1]}
}

func durations(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// fmtMS formats milliseconds with sensible precision.
func fmtMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}
