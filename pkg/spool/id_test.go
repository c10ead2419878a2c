package spool

import (
	"testing"
	"time"
)

// IDTime gives back the time NewID encoded, to the microsecond, and no
// time for what is not a queue ID.
func TestIDTime(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 11, 23, 14, 40, 0, 123456000, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(2100, 12, 31, 23, 59, 59, 999999000, time.UTC),
	} {
		id := NewID(at)
		got, ok := IDTime(id)
		if !ok || !got.Equal(at) {
			t.Errorf("IDTime(%s) = %v %v, want %v", id, got, ok, at)
		}
	}
	for _, bad := range []string{"", "short", "0006270A1B2C3D4E5F6", "0006270a1b2c3d4e5f60", "0006270A1B2C3D4E5F6G", "../06270A1B2C3D4E5F60"} {
		if got, ok := IDTime(bad); ok {
			t.Errorf("IDTime(%q) = %v, want no time", bad, got)
		}
	}
}
