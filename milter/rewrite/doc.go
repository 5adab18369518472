// Package rewrite rewrites an email body for open and click tracking.
//
// It is a pure transform: a raw body (or whole RFC 5322 message) goes in, the
// rewritten bytes come out, and the caller supplies the tracked URLs through
// callbacks in [Options]. It knows nothing of milters, databases or tokens.
//
// # Splicing, not re-encoding
//
// The MIME tree (RFC 2045, RFC 2046) is walked line by line on the raw bytes.
// Every byte outside the rewritten leaves is copied verbatim and streamed:
// preamble, epilogue, boundary lines, part headers, attachments and their
// base64 line lengths. Only the text/html leaves (and, with
// [Options.TextLinks], the text/plain leaves) are read into memory, bounded by
// [Options.MaxPartSize], decoded (transfer encoding, then charset), rewritten,
// and encoded again the way they came: base64 with the original line length
// and line ends (taken from the first full line, after any blank lines,
// which are kept), quoted-printable, or 7bit/8bit. In a quoted-printable
// leaf only the raw lines that hold a change are encoded again: every other
// line keeps its soft line breaks and its encoded =0A and =0D, and a CR or LF
// of the data is never turned into a line break. A 7bit/8bit leaf whose
// rewritten lines would exceed the 998-octet limit of RFC 5322 section 2.1.1
// becomes quoted-printable and its Content-Transfer-Encoding header changes
// (for the top-level body, see [Result.SetContentTransferEncoding]). A leaf that
// ends up unchanged is copied as it was, byte for byte.
//
// # What is left alone
//
//   - the whole body when the top-level type is multipart/signed,
//     multipart/encrypted or application/pkcs7-mime ([Result.Skipped] says so);
//     nested parts of those types are copied verbatim;
//   - message/* parts (message/rfc822 is not descended into), attachments
//     (Content-Disposition: attachment, or a filename/name parameter), and
//     every leaf that is not text/html or text/plain;
//   - leaves in a charset that does not round-trip (decoding then encoding
//     must give the same bytes), in an unknown transfer encoding, with invalid
//     base64, or larger than MaxPartSize ([Result.Notes] says why);
//   - links that are not absolute http(s) URLs (mailto:, tel:, sms:,
//     #fragment, relative, other schemes), URLs the tracker would not
//     redirect to (package linkurl decides, for both), URLs for
//     which [Options.IsTracked] is true, and links carrying the attribute
//     data-leadpush-notrack. That attribute is an instruction to Leadpush, like
//     the X-Leadpush-* headers, so it is removed from the tag on the way out
//     even when nothing else in the tag changes.
//
// # HTML
//
// HTML is tokenized with golang.org/x/net/html's Tokenizer and every token is
// re-emitted from Raw(); only the href value of <a> and <area> changes, keeping
// its quoting style, and the new URL is HTML-escaped. Entities in the original
// href are decoded (as an attribute value) and the URL cleaned as a browser
// cleans it (linkurl.Target: surrounding C0 controls and spaces dropped, tabs
// and line breaks removed, other spaces percent-encoded) before it is given
// to [Options.ClickURL], so the tracked link leads where the original led.
// The content of <noscript> is tokenized as markup, not as raw text: mail
// clients run no scripts, so they show it and its links are clicked. The
// open pixel goes just before the first </body>; without one, before
// </html>; without either, at the end of the document (not at all when it
// ends inside a tag). It is not added when an <img> whose src is tracked is
// already there.
//
// Outlook conditional comments (<!--[if mso]> ... <![endif]-->) are a deliberate
// exception to "comments are left alone": Outlook desktop renders their
// content, typically a VML button (<v:roundrect href="...">) standing in for an
// <a> that Outlook cannot style. So the inside of a comment whose text starts
// with "[if" is tokenized too and the href attribute of every tag in it is
// rewritten with the same rules as <a>, so that Outlook clicks are tracked as
// well. Other comments are copied verbatim; no pixel is ever put in a comment.
//
// # Plain text
//
// With TextLinks, bare http:// and https:// URLs in text/plain leaves are
// rewritten. A URL ends at white space, a control character, '<', '>' or '"';
// trailing . , ; : ! ? ) ' " are not part of it, except a ')' that closes a '('
// inside the URL. A URL followed by a non-ASCII byte is left alone rather than
// risk cutting an internationalized URL short.
//
// # Idempotence
//
// Body(Body(x)) == Body(x) with the same options: tracked URLs and the pixel
// are recognised through IsTracked and never rewritten or added again. The one
// exception is data-leadpush-notrack: the first pass strips it, so a second
// pass tracks that link (a third pass then changes nothing).
package rewrite
