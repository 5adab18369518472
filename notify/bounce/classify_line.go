package bounce

import (
	"encoding/json"
	"io"
)

// Line is what `leadpushctl bounce classify` prints for one message: the
// answer an operator needs to see why an address was or was not
// suppressed, without the ledger.
type Line struct {
	File       string          `json:"file"`
	Kind       Kind            `json:"kind"`
	Recipients []LineRecipient `json:"recipients"`
}

// LineRecipient is one recipient of a Line. Every field is always present.
type LineRecipient struct {
	Address      string `json:"address"`
	Status       string `json:"status"`
	Code         int    `json:"code"`
	Class        Class  `json:"class"`
	BounceReason Reason `json:"bounce_reason"`
	Diagnostic   string `json:"diagnostic"`
}

// NewLine summarises rep as the Line of file. A nil rep gives Kind
// unknown without recipients.
func NewLine(file string, rep *Report) Line {
	l := Line{File: file, Kind: KindUnknown, Recipients: []LineRecipient{}}
	if rep == nil {
		return l
	}
	l.Kind = rep.Kind
	for _, r := range rep.Recipients {
		l.Recipients = append(l.Recipients, LineRecipient{Address: r.Address, Status: r.Status, Code: r.Code,
			Class: r.Class, BounceReason: r.BounceReason, Diagnostic: r.Diagnostic})
	}
	return l
}

// WriteLine parses the message in r and writes its Line, as one line of
// JSON, to w. file names it in the output ("-" for standard input).
// envelopeTo and opt are as for Parse. Only a failure to read r or to
// write w is an error.
func WriteLine(w io.Writer, file string, r io.Reader, envelopeTo string, opt Options) error {
	rep, err := Parse(r, envelopeTo, opt)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(NewLine(file, rep))
}
