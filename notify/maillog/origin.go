package maillog

import (
	"net/netip"
	"strings"
	"time"
)

// Origin says where a queue id's mail came from, as Postfix logs it when
// the message enters the queue. A consumer that knows which clients the
// milter trusts can tell from it which queue ids will never be recorded.
type Origin struct {
	Time    time.Time
	QueueID string
	// Client is smtpd's client address (client=NAME[ADDR]); invalid for
	// other origins.
	Client netip.Addr
	// SASL is set when smtpd logged a sasl_username.
	SASL bool
	// Local is set for pickup (sendmail(1), non_smtpd_milters).
	Local bool
	// Internal is set for mail Postfix made itself (bounce, delay and
	// success notifications), which passes no milter.
	Internal bool
}

// ParseOrigin parses smtpd's "QID: client=...", pickup's "QID: uid=..."
// and bounce's "QID: sender non-delivery notification: NEWQID" (whose
// Origin is NEWQID's). ok is false for any other line.
func ParseOrigin(line []byte, now time.Time) (Origin, bool) {
	s := strings.TrimRight(string(line), "\r\n")
	ts, rest, ok := parseTime(s, now)
	if !ok {
		return Origin{}, false
	}
	_, rest, ok = strings.Cut(rest, " ") // host
	if !ok {
		return Origin{}, false
	}
	tag, msg, ok := strings.Cut(rest, ": ")
	if !ok {
		return Origin{}, false
	}
	if i := strings.IndexByte(tag, '['); i > 0 {
		tag = tag[:i]
	}
	slash := strings.LastIndexByte(tag, '/')
	if slash <= 0 {
		return Origin{}, false
	}
	qid, body, ok := strings.Cut(msg, ": ")
	if !ok || !validQueueID(qid) {
		return Origin{}, false
	}
	o := Origin{Time: ts, QueueID: qid}
	switch tag[slash+1:] {
	case "smtpd":
		c, ok := strings.CutPrefix(body, "client=")
		if !ok {
			return Origin{}, false
		}
		addr, _, _ := strings.Cut(c, ", ")
		if i, j := strings.LastIndexByte(addr, '['), strings.LastIndexByte(addr, ']'); i >= 0 && j > i {
			if a, err := netip.ParseAddr(strings.TrimPrefix(addr[i+1:j], "IPv6:")); err == nil {
				o.Client = a.Unmap()
			}
		}
		o.SASL = strings.Contains(c, "sasl_username=")
	case "pickup":
		if !strings.HasPrefix(body, "uid=") {
			return Origin{}, false
		}
		o.Local = true
	case "bounce":
		i := strings.LastIndex(body, " notification: ")
		if i < 0 {
			return Origin{}, false
		}
		nq := body[i+len(" notification: "):]
		if !validQueueID(nq) {
			return Origin{}, false
		}
		o.QueueID, o.Internal = nq, true
	default:
		return Origin{}, false
	}
	return o, true
}
