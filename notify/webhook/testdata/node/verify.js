// Verifies captured Leadpush webhook requests with the official Standard
// Webhooks library, as the README tells receivers to. Input (stdin): JSON
// {"secret": "whsec_...", "requests": [{"name", "headers": {...}, "body":
// base64}]}. Output (stdout): one JSON line per request:
// {"name", "verified": bool, "error", "defaultVerify": "parsed" | error}.
"use strict";
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const { secret, requests } = JSON.parse(input);
  // A "whsec_" secret is base64; any other string would need
  // new Webhook(secret, { format: "raw" }).
  const wh = new Webhook(secret);
  for (const r of requests) {
    const body = Buffer.from(r.body, "base64");
    const out = { name: r.name, verified: false };
    try {
      // jsonParse: false verifies the raw bytes of either format; the
      // default also parses the body as JSON and throws on a batch's
      // form-encoded body although its signature is valid.
      wh.verify(body, r.headers, { jsonParse: false });
      out.verified = true;
    } catch (e) {
      out.error = String(e && e.message ? e.message : e);
    }
    try {
      wh.verify(body, r.headers);
      out.defaultVerify = "parsed";
    } catch (e) {
      out.defaultVerify = String(e && e.name ? e.name : e);
    }
    process.stdout.write(JSON.stringify(out) + "\n");
  }
});
