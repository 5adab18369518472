package webhook

import "github.com/leadpush/leadpush/internal/config"

// Endpoint is one webhook receiver as configured ([[webhook]]); its keys,
// defaults and validation are internal/config's.
type Endpoint = config.Webhook

// Formats of an endpoint.
const (
	FormatBatch = config.FormatBatch // seed 002: form POST, one parameter holding a JSON array
	FormatJSON  = config.FormatJSON  // seed 001: one application/json POST per event
)

// DefaultParam is the form parameter of a batch POST when none is set.
const DefaultParam = config.DefaultParam

func secretKey(secret string) ([]byte, error) { return config.WebhookKey(secret) }
