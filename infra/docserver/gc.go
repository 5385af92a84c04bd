package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set. FerretDB v1 decodes
// and re-encodes whole JSON documents on every operation, so the server allocates at a great rate
// and live memory stays small: under `make bench` the collector (assists and background marking)
// took about 30% of the server's CPU at Go's default of 100. 400 lets the heap grow to five times
// the live data between collections instead of twice.
const defaultGCPercent = 400

// tuneRuntime sets the collector's target (GOGC, when given, wins) and turns off the sampling of
// allocations for heap profiles unless the pprof endpoint is on: with FerretDB's many distinct
// allocation stacks, flushing those samples at every collection cost about 7% of the CPU.
func tuneRuntime(pprofOn bool) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if !pprofOn {
		runtime.MemProfileRate = 0
	}
}
