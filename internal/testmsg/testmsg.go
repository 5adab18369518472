// Package testmsg makes messages for tests and benchmarks.
package testmsg

import (
	"bytes"
	"encoding/base64"
	"fmt"
)

// Big returns a multipart/mixed body (boundary "b1") of about size bytes: a
// short HTML part with one link and a base64 attachment in 76-column lines,
// CRLF line ends. The caller writes the top-level header.
func Big(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 4096)
	b.WriteString("--b1\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n<p>Your report: <a href=\"https://www.example.com/r\">online</a></p>\r\n")
	b.WriteString("--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n\r\n")
	raw := make([]byte, 57)
	line := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	for i := 0; b.Len() < size-100; i++ {
		for j := range raw {
			raw[j] = byte(i*7 + j)
		}
		base64.StdEncoding.Encode(line, raw)
		b.Write(line)
		b.WriteString("\r\n")
	}
	b.WriteString("--b1--\r\n")
	return b.Bytes()
}

// Links returns a multipart/mixed body (boundary "b1") of about size bytes
// with one text/html part holding n links, evenly spread, CRLF line ends
// (every line under 998 octets). The caller writes the top-level header.
func Links(size, n int) []byte {
	var b bytes.Buffer
	b.Grow(size + 4096)
	b.WriteString("--b1\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n<!DOCTYPE html>\r\n<html><body>\r\n")
	para := []byte("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.</p>\r\n")
	end := "</body></html>\r\n--b1--\r\n"
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "<p><a href=\"https://www.example.com/catalog/item/%d?utm_source=digest&amp;utm_medium=email\">Item %d</a></p>\r\n", i, i)
		for b.Len() < (i+1)*(size-len(end))/n {
			b.Write(para)
		}
	}
	b.WriteString(end)
	return b.Bytes()
}
