package units

import "testing"

func TestSize(t *testing.T) {
	for in, want := range map[string]Size{"1048576": 1 << 20, "1MiB": 1 << 20, "512KiB": 512 << 10, "10MB": 10e6, "2 GiB": 2 << 30} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("Size(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	for _, bad := range []string{"lots", "-1", "1 TiB", ""} {
		var s Size
		if err := s.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Size(%q) accepted", bad)
		}
	}
}
