package client

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The contract's error codes (DESIGN.md, "Admin HTTP contract"), as the
// daemon sends them in Error.Code.
const (
	CodeInternal          = 1000
	CodeInvalidRequest    = 1001
	CodeTooManyRequests   = 1004
	CodeMissingAuth       = 1101
	CodeAuthFailed        = 1102
	CodeStaleTimestamp    = 1103
	CodeNotFound          = 1104
	CodeReplayedRequest   = 1105
	CodeNotCompleted      = 1305
	CodeSessionInProgress = 1306
	CodeInvalidTransition = 1401
	CodeConflict          = 1409
)

// Error is a non-2xx answer of the admin API:
// {"status":"fail","code":<int>,"message":"..."}. When the body is not of
// that shape (a proxy's page, say), Code is 0 and Message is a short,
// printable excerpt of it.
type Error struct {
	StatusCode int           // HTTP status
	Code       int           // the contract's code, 0 if the body had none
	Message    string        // the daemon's message
	RetryAfter time.Duration // from Retry-After, 0 if absent
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sessiond answered ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	if e.Code != 0 {
		b.WriteString(", code ")
		b.WriteString(strconv.Itoa(e.Code))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	return b.String()
}

// ErrorCode returns the contract's code of err's *Error, or 0 when err
// holds none.
func ErrorCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// IsNotFound reports whether err is a "not found" answer (code 1104): no
// such session (also right after a delete), delivery, endpoint or recovery.
func IsNotFound(err error) bool { return ErrorCode(err) == CodeNotFound }

// IsInvalidTransition reports whether err is the state machine's refusal
// (code 1401).
func IsInvalidTransition(err error) bool { return ErrorCode(err) == CodeInvalidTransition }

// IsRateLimited reports whether err is a 429 (code 1004); Error.RetryAfter
// says when to try again.
func IsRateLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusTooManyRequests
}

// maxExcerpt bounds the excerpt of an undecodable error body, in bytes.
const maxExcerpt = 120

func newError(resp *Response, now time.Time) *Error {
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(resp.Body, &body); err == nil && (body.Code != 0 || body.Message != "") {
		e.Code, e.Message = body.Code, oneLine(body.Message, len(body.Message))
		return e
	}
	if e.Message = oneLine(string(resp.Body), maxExcerpt); e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// oneLine returns up to limit bytes of s as valid UTF-8 on one line:
// control characters become spaces, runs of spaces shrink to one.
func oneLine(s string, limit int) string {
	var b strings.Builder
	space := false
	for i, r := range s {
		if i >= limit {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
