package config

import (
	"testing"

	"github.com/leadpush/leadpush/notify/maillog"
)

// TestMaillogFormats: every format the config accepts is one the follower
// reads, by the same name.
func TestMaillogFormats(t *testing.T) {
	for _, f := range []string{MaillogPostfix, MaillogSendmail, MaillogAuto} {
		c, err := Parse("[maillog]\nformat = \"" + f + "\"\n")
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got, err := maillog.ParseFormat(c.Maillog.Format); err != nil || string(got) != f {
			t.Errorf("%s: the follower reads %q, %v", f, got, err)
		}
	}
	if _, err := Parse("[maillog]\nformat = \"exim\"\n"); err == nil {
		t.Error("format exim accepted")
	}
}
