// Package units holds the value types of leadpush.toml that more than one
// package's configuration uses.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a byte count written as 1048576, "1MiB", "10MB" or "512KiB".
type Size int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v := strings.TrimSpace(string(b))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(n), u.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("bad size %q (want e.g. 1048576, \"512KiB\", \"10MiB\")", string(b))
	}
	*s = Size(n * mult)
	return nil
}
