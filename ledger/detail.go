package ledger

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// appendJSON appends d as encoding/json would marshal it, byte for byte
// (TestDetailJSON holds the two together). Every tracking hit stores one;
// json.Marshal's reflection was a tenth of the writer's work per hit.
func (d *Detail) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	str := func(key, v string) {
		if v == "" {
			return
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, key...)
		b = append(b, '"', ':')
		b = appendJSONString(b, v)
	}
	str("ip", d.IP)
	str("user_agent", d.UserAgent)
	str("ua_family", d.UAFamily)
	str("ua_major", d.UAMajor)
	str("url", d.URL)
	if d.Machine {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `"machine":true`...)
	}
	str("machine_reason", d.MachineReason)
	str("status", d.Status)
	str("relay", d.Relay)
	str("delivery_report", d.Report)
	str("source", d.Source)
	str("reason", d.Reason)
	str("bounce_reason", d.BounceReason)
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json does: printable ASCII
// is copied, '"' and '\\' are backslashed, and '<', '>' and '&' become
// \u003c, \u003e and \u0026 (json.Marshal's HTML escaping; click URLs are
// full of '&'); a control character or anything beyond ASCII sends the
// string through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	start := len(b)
	b = append(b, '"')
	run := 0 // start of the bytes not yet copied
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c >= utf8.RuneSelf:
			q, err := json.Marshal(s)
			if err != nil { // a string always marshals
				return strconv.AppendQuote(b[:start], s)
			}
			return append(b[:start], q...)
		case c == '"' || c == '\\':
			b = append(append(b, s[run:i]...), '\\', c)
			run = i + 1
		case c == '<' || c == '>' || c == '&':
			b = append(append(b, s[run:i]...), '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			run = i + 1
		}
	}
	b = append(b, s[run:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"
