package webhook

// This file holds the payload types and nothing else: it is the contract
// with the operator's application. Fields are only ever added; a change that
// breaks a receiver bumps Version.

// Version of the payloads in this file. It is sent in the User-Agent
// header ("leadpush-webhook/1").
const Version = 1

// BatchEvent is one element of the JSON array a "batch" endpoint receives
// in its form parameter (seed 002, LeaderSend/Mandrill style). Dates are
// unix seconds; a field that does not apply to the event is left out.
type BatchEvent struct {
	// Event is sent, open, click, unsubscribe, spam, soft_bounce,
	// hard_bounce or reject. Processed events are not sent to batch
	// endpoints: seed 002 has no such event.
	Event     string `json:"event"`
	Timestamp int64  `json:"timestamp"` // when the event occurred
	// EventID is unique per event and stable across retries: receivers
	// deduplicate on it (delivery is at least once). Leadpush extension.
	EventID   string `json:"event_id"`
	URL       string `json:"url,omitempty"`        // click
	IP        string `json:"ip,omitempty"`         // open, click
	UserAgent string `json:"user_agent,omitempty"` // open, click
	// Machine is true for opens and clicks that an image proxy, a privacy
	// feature or a link scanner made rather than a person. Leadpush
	// extension.
	Machine         bool     `json:"machine,omitempty"`
	BounceDate      int64    `json:"bounce_date,omitempty"`      // hard_bounce, soft_bounce, spam
	OpenDate        int64    `json:"open_date,omitempty"`        // open
	ClickDate       int64    `json:"click_date,omitempty"`       // click
	UnsubscribeDate int64    `json:"unsubscribe_date,omitempty"` // unsubscribe
	Msg             BatchMsg `json:"msg"`
}

// BatchMsg is the message an event of a batch is about.
type BatchMsg struct {
	ID        string `json:"id"`        // Leadpush message id
	Timestamp int64  `json:"timestamp"` // when the message was sent (accepted by the milter)
	Email     string `json:"email"`     // the event's recipient
	Sender    string `json:"sender"`    // envelope sender, else the From address
	Subject   string `json:"subject"`
	// Opens and Clicks are the message's counters as of this event (this
	// one included), not as of sending: a retry or replay says the same.
	Opens  int `json:"opens"`
	Clicks int `json:"clicks"`
	// Seq numbers the message's events 1, 2, 3, ... in the order Leadpush
	// recorded them, the same in every endpoint, retry and replay: sort one
	// message's events by it. Absent for events recorded before Leadpush
	// numbered them. Leadpush extension.
	Seq int64 `json:"seq,omitempty"`
	// DeliveryReport is the remote reply or diagnostic of a bounce
	// (soft_bounce, hard_bounce only).
	DeliveryReport string `json:"delivery_report,omitempty"`
	// BounceReason is the bounce's cause in sisimai's vocabulary
	// (userunknown, mailboxfull, blocked, ...: README, Bounces), beside
	// DeliveryReport (soft_bounce, hard_bounce only). Leadpush extension.
	BounceReason string `json:"bounce_reason,omitempty"`
	// Stream is the message stream it was sent in ([[stream]]); absent
	// for messages recorded before streams, and for refused recipients of
	// a message the milter never saw. Leadpush extension.
	Stream string   `json:"stream,omitempty"`
	Tags   []string `json:"tags"` // never null
	// Headers are the message's recorded custom headers (seed 001), name
	// to value as sent (RFC 2047 words decoded); a name sent more than
	// once has its values joined with ", " here (HeaderList keeps them
	// apart). Present, maybe empty, in every event. Leadpush extension.
	Headers map[string]string `json:"headers"`
	// HeaderList is present when a header name occurs more than once
	// (Headers then joins its values): every recorded custom header in
	// the order sent, one entry per occurrence, values as in Headers but
	// never joined. Absent, Headers says everything. Leadpush extension.
	HeaderList []HeaderField `json:"header_list,omitempty"`
}

// Payload is the body of one POST to a "json" endpoint: one event (seed
// 001, "Webhook Payload with Custom Headers").
type Payload struct {
	Event        PayloadEvent `json:"event"`
	EmailMessage EmailMessage `json:"emailMessage"`
}

// Event type numbers of the "json" format (seed 001).
const (
	TypeProcessed    = 0
	TypeDropped      = 1 // ledger "reject"
	TypeDelivered    = 2
	TypeSoftBounced  = 3
	TypeHardBounced  = 4
	TypeOpened       = 5
	TypeClicked      = 6
	TypeUnsubscribed = 7
	TypeSpam         = 8
)

// PayloadEvent is the event part of a Payload.
type PayloadEvent struct {
	EventID   string `json:"eventID"` // also the webhook-id header
	Type      int    `json:"type"`    // Type* constants
	MessageID string `json:"messageID"`
	// Sequence numbers the message's events as BatchMsg.Seq does. Leadpush
	// extension.
	Sequence      int64         `json:"sequence,omitempty"`
	EventMetadata EventMetadata `json:"eventMetadata"`
}

// EventMetadata holds what is specific to one event. Empty fields are left
// out.
type EventMetadata struct {
	UserAgent *UserAgent `json:"userAgent,omitempty"` // open, click
	// Timestamp is when the event occurred, unix seconds. Leadpush
	// extension, always present.
	Timestamp int64  `json:"timestamp"`
	Recipient string `json:"recipient,omitempty"`
	IP        string `json:"ip,omitempty"`           // open, click
	URL       string `json:"url,omitempty"`          // click
	RawUA     string `json:"userAgentRaw,omitempty"` // open, click: the header as received
	// Machine marks opens and clicks made by a proxy or scanner, with the
	// reason it was recognised.
	Machine       bool   `json:"machine,omitempty"`
	MachineReason string `json:"machineReason,omitempty"`
	// The bounce report: remote reply or diagnostic, enhanced status code
	// (RFC 3463) and the relay that answered.
	DeliveryReport string `json:"deliveryReport,omitempty"`
	Status         string `json:"status,omitempty"`
	Relay          string `json:"relay,omitempty"`
	Reason         string `json:"reason,omitempty"` // why a message was dropped, or an unsubscribe's origin
	// BounceReason is a bounce's cause in sisimai's vocabulary
	// (userunknown, mailboxfull, blocked, ...). Leadpush extension.
	BounceReason string `json:"bounceReason,omitempty"`
	Source       string `json:"source,omitempty"` // where Leadpush learned of the event: milter, maillog, dsn, arf, tracker, ...
}

// UserAgent is a parsed user agent, keys capitalised as in seed 001.
type UserAgent struct {
	Family string `json:"Family"`
	Major  string `json:"Major"`
}

// EmailMessage is the message part of a Payload.
type EmailMessage struct {
	MessageID string    `json:"messageID"`
	From      Address   `json:"from"`
	To        []Address `json:"to"` // never null
	Subject   string    `json:"subject"`
	// Headers are the recorded custom headers, as in BatchMsg.Headers;
	// present, maybe empty, in every event.
	Headers map[string]string `json:"headers"`
	// HeaderList is as BatchMsg.HeaderList: present when a name repeats.
	// Leadpush extension.
	HeaderList []HeaderField `json:"header_list,omitempty"`
	// Tags of the message (X-Leadpush-Tag), never null. Leadpush extension.
	Tags []string `json:"tags"`
	// Stream is the message stream it was sent in, as BatchMsg.Stream.
	// Leadpush extension.
	Stream string `json:"stream,omitempty"`
}

// HeaderField is one custom header as sent.
type HeaderField struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Address is a mailbox with an optional display name.
type Address struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}
