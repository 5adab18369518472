package rewrite

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/net/html"
)

// BenchmarkTokenizerFloor is the cost of only tokenizing the benchmark
// document: the floor for BenchmarkBody/single.
func BenchmarkTokenizerFloor(b *testing.B) {
	doc := []byte(benchHTML())
	b.ReportAllocs()
	for b.Loop() {
		z := html.NewTokenizer(bytes.NewReader(doc))
		for z.Next() != html.ErrorToken {
		}
		if z.Err() != io.EOF {
			b.Fatal(z.Err())
		}
	}
}
