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
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json does: printable ASCII
// other than '"', '\\', '<', '>' and '&' is copied; anything else sends the
// string through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil { // a string always marshals
				return strconv.AppendQuote(b, s)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
