package main

import (
	"net/http/httptest"
	"testing"
)

func TestPprofAddressIsOffByDefaultAndLoopbackOnly(t *testing.T) {
	cases := []struct {
		flag, env, want string
		ok              bool
	}{
		{"", "", "", false},
		{"127.0.0.1:6060", "", "127.0.0.1:6060", true},
		{"", "127.0.0.1:6061", "127.0.0.1:6061", true},
		{"127.0.0.1:6060", "127.0.0.1:6061", "127.0.0.1:6060", true},
		{"localhost:6060", "", "localhost:6060", true},
		{"[::1]:6060", "", "[::1]:6060", true},
		{"0.0.0.0:6060", "", "", false},
		{":6060", "", "", false},
		{"10.0.0.5:6060", "", "", false},
		{"6060", "", "", false},
	}
	for _, c := range cases {
		got, ok := pprofAddress(c.flag, c.env)
		if got != c.want || ok != c.ok {
			t.Errorf("pprofAddress(%q, %q) = %q, %v; want %q, %v", c.flag, c.env, got, ok, c.want, c.ok)
		}
	}
}

func TestPprofMuxServesTheIndex(t *testing.T) {
	rec := httptest.NewRecorder()
	pprofMux().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /debug/pprof/: %d", rec.Code)
	}
}
