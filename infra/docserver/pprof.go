package main

import (
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
)

// pprofAddress is where the profiling endpoint listens: the --pprof flag, else the
// YIWANG_DOCSERVER_PPROF environment variable, else nowhere (off). Only loopback addresses are
// accepted, as the endpoint has no authentication.
func pprofAddress(flagValue, envValue string) (string, bool) {
	addr := strings.TrimSpace(flagValue)
	if addr == "" {
		addr = strings.TrimSpace(envValue)
	}
	if addr == "" {
		return "", false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", false
	}
	return addr, true
}

// pprofMux serves Go's profiles under /debug/pprof/ (go tool pprof http://ADDR/debug/pprof/profile?seconds=20).
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// servePprof starts the endpoint when asked for; it tells whether it did.
func servePprof(flagValue, envValue string) bool {
	addr, ok := pprofAddress(flagValue, envValue)
	if !ok {
		if flagValue != "" || envValue != "" {
			log.Printf("yiwang-docserver: pprof not started: %q is not a loopback host:port", flagValue+envValue)
		}
		return false
	}
	log.Printf("yiwang-docserver: pprof on http://%s/debug/pprof/", addr)
	go func() {
		if err := http.ListenAndServe(addr, pprofMux()); err != nil {
			log.Printf("yiwang-docserver: pprof: %v", err)
		}
	}()
	return true
}
