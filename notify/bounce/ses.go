package bounce

import (
	"bytes"
	"encoding/json"
	"strings"
)

// sesNotification is an Amazon SES bounce, complaint or delivery-delay
// notification, as SNS publishes it ("notificationType") or as event
// publishing does ("eventType"), possibly inside an SNS envelope whose
// Message is the notification as a JSON string. Only the fields used are
// declared.
type sesNotification struct {
	Type             string `json:"Type"`    // SNS envelope: "Notification"
	Message          string `json:"Message"` // SNS envelope: the notification
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           *struct {
		BounceType        string         `json:"bounceType"`
		BounceSubType     string         `json:"bounceSubType"`
		BouncedRecipients []sesRecipient `json:"bouncedRecipients"`
		ReportingMTA      string         `json:"reportingMTA"`
		RemoteMtaIP       string         `json:"remoteMtaIp"`
	} `json:"bounce"`
	Complaint *struct {
		ComplainedRecipients  []sesRecipient `json:"complainedRecipients"`
		ComplaintFeedbackType string         `json:"complaintFeedbackType"`
		UserAgent             string         `json:"userAgent"`
	} `json:"complaint"`
	DeliveryDelay *struct {
		DelayType         string         `json:"delayType"`
		DelayedRecipients []sesRecipient `json:"delayedRecipients"`
		ReportingMTA      string         `json:"reportingMTA"`
	} `json:"deliveryDelay"`
	Mail struct {
		SourceIP      string `json:"sourceIp"`
		CommonHeaders struct {
			MessageID string   `json:"messageId"`
			Subject   string   `json:"subject"`
			From      []string `json:"from"`
			To        []string `json:"to"`
		} `json:"commonHeaders"`
		Headers []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"headers"`
	} `json:"mail"`
}

type sesRecipient struct {
	EmailAddress   string `json:"emailAddress"`
	Action         string `json:"action"`
	Status         string `json:"status"`
	DiagnosticCode string `json:"diagnosticCode"`
}

// sesSubTypes names the reason of a bounce whose diagnostic says nothing,
// from SES's bounceSubType.
var sesSubTypes = map[string]Reason{
	"NoEmail": UserUnknown, "MailboxFull": MailboxFull, "MessageTooLarge": MesgTooBig,
	"ContentRejected": ContentError, "AttachmentRejected": PolicyViolation,
}

// parseSES recognises an SES notification in a text or JSON leaf of msg
// and reports whether it found one.
func parseSES(rep *Report, msg *part) bool {
	var body []byte
	msg.walk(false, func(p *part) {
		if body != nil || len(p.parts) > 0 || p.msg != nil {
			return
		}
		if p.mediaType != "text/plain" && p.mediaType != "application/json" {
			return
		}
		b := bytes.TrimSpace(p.body)
		if len(b) > 0 && b[0] == '{' && (bytes.Contains(b, []byte(`"notificationType"`)) ||
			bytes.Contains(b, []byte(`"eventType"`)) || bytes.Contains(b, []byte(`\"notificationType\"`)) ||
			bytes.Contains(b, []byte(`\"eventType\"`))) {
			body = b
		}
	})
	if body == nil {
		return false
	}
	var n sesNotification
	if err := json.Unmarshal(body, &n); err != nil {
		return false
	}
	if n.Message != "" && n.NotificationType == "" && n.EventType == "" {
		var inner sesNotification
		if err := json.Unmarshal([]byte(n.Message), &inner); err != nil {
			return false
		}
		n = inner
	}
	typ := n.NotificationType
	if typ == "" {
		typ = n.EventType
	}
	switch strings.ToLower(typ) {
	case "bounce", "complaint", "deliverydelay":
	default:
		return false // delivery, send, open ...: not ours to classify
	}
	ch := n.Mail.CommonHeaders
	rep.OriginalMessageID = messageID(ch.MessageID)
	set := func(name, v string) {
		if v == "" {
			return
		}
		if rep.OriginalHeaders == nil {
			rep.OriginalHeaders = map[string]string{}
		}
		rep.OriginalHeaders[name] = clean(v)
	}
	for _, h := range n.Mail.Headers {
		for _, name := range originalHeaderNames {
			if strings.EqualFold(h.Name, name) {
				set(name, decodeHeader(h.Value))
				if name == "Message-ID" && rep.OriginalMessageID == "" {
					rep.OriginalMessageID = messageID(h.Value)
				}
			}
		}
	}
	set("Subject", ch.Subject)
	if len(ch.From) > 0 {
		set("From", ch.From[0])
	}
	switch {
	case strings.EqualFold(typ, "Bounce") && n.Bounce != nil:
		b := n.Bounce
		rep.Kind = KindBounce
		rep.Reason = "Amazon SES bounce notification (" + clean(b.BounceType) + "/" + clean(b.BounceSubType) + ")"
		for _, r := range b.BouncedRecipients {
			if len(rep.Recipients) >= maxRecipients {
				break
			}
			rc := Recipient{Address: normalizeAddress(r.EmailAddress), Action: strings.ToLower(clean(r.Action)),
				Status: clean(r.Status), Diagnostic: stripType(clean(r.DiagnosticCode)), RemoteMTA: stripType(clean(b.ReportingMTA))}
			if rc.Action == "" {
				rc.Action = "failed"
			}
			finishRecipient(&rc)
			if (rc.BounceReason == OnHold || rc.BounceReason == Undefined) && sesSubTypes[b.BounceSubType] != "" {
				rc.BounceReason = sesSubTypes[b.BounceSubType]
				rc.Class = classOf(rc.BounceReason, 5)
				if b.BounceType == "Transient" {
					rc.Class = Soft
				}
			}
			rep.Recipients = append(rep.Recipients, rc)
		}
		if len(rep.Recipients) == 0 {
			rep.Recipients = append(rep.Recipients, Recipient{Action: "failed", Class: Soft, BounceReason: Undefined})
		}
	case strings.EqualFold(typ, "Complaint") && n.Complaint != nil:
		c := n.Complaint
		rep.Kind = KindComplaint
		rep.FeedbackType = strings.ToLower(clean(c.ComplaintFeedbackType))
		rep.UserAgent = clean(c.UserAgent)
		rep.SourceIP = clean(n.Mail.SourceIP)
		rcpts := make([]string, 0, len(c.ComplainedRecipients))
		for _, r := range c.ComplainedRecipients {
			rcpts = append(rcpts, normalizeAddress(r.EmailAddress))
		}
		addRecipients(rep, rcpts)
		rep.Reason = "Amazon SES complaint notification"
	case strings.EqualFold(typ, "DeliveryDelay") && n.DeliveryDelay != nil:
		d := n.DeliveryDelay
		rep.Kind = KindDelayed
		rep.Reason = "Amazon SES delivery delay notification (" + clean(d.DelayType) + ")"
		for _, r := range d.DelayedRecipients {
			if len(rep.Recipients) >= maxRecipients {
				break
			}
			rc := Recipient{Address: normalizeAddress(r.EmailAddress), Action: "delayed", Status: clean(r.Status),
				Diagnostic: stripType(clean(r.DiagnosticCode)), RemoteMTA: stripType(clean(d.ReportingMTA))}
			finishRecipient(&rc)
			rep.Recipients = append(rep.Recipients, rc)
		}
	default:
		return false // a notification without its detail object
	}
	return true
}
