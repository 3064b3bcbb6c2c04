package main

// Go's collector runs whenever the heap has grown by GOGC percent (100) of what is live. A compiled
// policy is a few MiB and each decision allocates about 20 KiB, so with the default the collector
// ran every couple of hundred decisions, and its background workers took a quarter of the
// library's CPU (72 us per decision against 50 us with 16 MiB to grow into; more headroom bought
// nothing but memory). keepGCHeadroom lets the heap grow by about gcHeadroom before a collection,
// and keeps the default's proportion once the live heap is larger than that (large data
// documents). An operator's GOGC, when set, is left alone.

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

const gcHeadroom = 16 << 20

func keepGCHeadroom() {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	// How far the heap may grow at GOGC=100 is read back from the runtime rather than computed: its
	// formula counts more than any one metric shows.
	debug.SetGCPercent(100)
	runtime.GC()
	samples := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(samples)
	percent := 100
	if goal, live := samples[0].Value.Uint64(), samples[1].Value.Uint64(); goal > live && goal-live < gcHeadroom {
		percent = int(gcHeadroom * 100 / (goal - live))
	}
	debug.SetGCPercent(percent)
}
