// The Go baseline of the pipeline bench's no-op figure: the same shape as
// `noop_pipeline` in ../../pipeline.rs. A source goroutine sends 1,000,000
// ints through 3 stages of 2 goroutines each, over channels of capacity 32,
// and the main goroutine drains the last channel.
//
// Standard library only; the bench builds it with `go build` (Go build cache
// in the target directory) and runs it once per round. Usage:
//
//	noop [items]
//
// Prints one line: `items_per_s <float>`.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

const (
	stages      = 3
	concurrency = 2
	buffer      = 32
)

func stage(in <-chan uint64) <-chan uint64 {
	out := make(chan uint64, buffer)
	var wg sync.WaitGroup
	wg.Add(concurrency)
	for w := 0; w < concurrency; w++ {
		go func() {
			defer wg.Done()
			for n := range in {
				out <- n
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

func main() {
	items := uint64(1_000_000)
	if len(os.Args) > 1 {
		n, err := strconv.ParseUint(os.Args[1], 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "usage: noop [items]")
			os.Exit(2)
		}
		items = n
	}
	start := time.Now()
	source := make(chan uint64, buffer)
	go func() {
		for n := uint64(0); n < items; n++ {
			source <- n
		}
		close(source)
	}()
	var out <-chan uint64 = source
	for s := 0; s < stages; s++ {
		out = stage(out)
	}
	var got uint64
	for range out {
		got++
	}
	elapsed := time.Since(start)
	if got != items {
		fmt.Fprintf(os.Stderr, "got %d items of %d\n", got, items)
		os.Exit(1)
	}
	fmt.Printf("items_per_s %.0f\n", float64(items)/elapsed.Seconds())
}
