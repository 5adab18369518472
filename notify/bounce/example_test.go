package bounce_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/leadpush/leadpush/notify/bounce"
)

// Postfix log results go through the same classifier as DSNs.
func ExampleDiagnose() {
	for _, r := range []struct{ status, dsn, reply string }{
		{"bounced", "5.1.1", "host mx.example.net[192.0.2.25] said: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command)"},
		{"bounced", "5.7.1", "host mx.example.org[192.0.2.26] said: 554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org (in reply to RCPT TO command)"},
		{"bounced", "5.2.2", "host mx.example.com[192.0.2.27] said: 552 5.2.2 <full@example.com>: Mailbox full (in reply to RCPT TO command)"},
		{"expired", "4.4.1", "connect to mx.example.com[192.0.2.28]:25: Connection timed out"},
	} {
		class, reason := bounce.Diagnose(r.status, r.dsn, 0, r.reply)
		fmt.Printf("%s %s dead=%v policy=%v dead-looking=%v\n", class, reason, reason.Dead(), reason.Policy(), reason.DeadLooking())
	}
	// Output:
	// hard userunknown dead=true policy=false dead-looking=false
	// soft blocked dead=false policy=true dead-looking=false
	// soft mailboxfull dead=false policy=false dead-looking=true
	// soft expired dead=false policy=false dead-looking=true
}

// WriteLine prints what `leadpushctl bounce classify` shows for a message.
func ExampleWriteLine() {
	msg := "From: MAILER-DAEMON@mx.example.org\n" +
		"Subject: Mail delivery failed: returning message to sender\n" +
		"X-Failed-Recipients: nobody@example.org\n" +
		"Auto-Submitted: auto-replied\n\n" +
		"A message that you sent could not be delivered to one or more of its\n" +
		"recipients. This is a permanent error. The following address(es) failed:\n\n" +
		"  nobody@example.org\n" +
		"    host mx2.example.org [192.0.2.44]\n" +
		"    SMTP error from remote mail server after RCPT TO:<nobody@example.org>:\n" +
		"    550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown\n"
	if err := bounce.WriteLine(os.Stdout, "exim.eml", strings.NewReader(msg), "bounce+x@bounce.example.com", bounce.Options{}); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"file":"exim.eml","kind":"bounce","recipients":[{"address":"nobody@example.org","status":"5.1.1","code":550,"class":"hard","bounce_reason":"userunknown","diagnostic":"550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"}]}
}
