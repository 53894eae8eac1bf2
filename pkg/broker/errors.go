package broker

// ErrorCode is the stable code of an *Error. Callers branch on it; HTTP
// front ends map it to a status (invalid → 400, too_large → 413,
// broadcast_level → 422, unavailable → 503, unknown → 504).
type ErrorCode string

// Error codes.
const (
	// CodeInvalid: the input is malformed; Error.Field names the field.
	CodeInvalid ErrorCode = "invalid"
	// CodeBroadcastLevel: the send is wider than a name's broadcast level
	// allows. The *Error wraps the *policy.LevelError.
	CodeBroadcastLevel ErrorCode = "broadcast_level"
	// CodeTooLarge: the event data is larger than the configured limit or
	// than the NATS server accepts.
	CodeTooLarge ErrorCode = "too_large"
	// CodeUnavailable: NATS did not take or confirm the messages (connection
	// closed, reconnecting past the deadline, context done).
	CodeUnavailable ErrorCode = "unavailable"
	// CodeUnknown: with acknowledged publishing, the wait for the history
	// stream's acknowledgement ended without an answer: the event may or may
	// not be stored. Publishing it again within the stream's duplicate
	// window is safe only with the same Nats-Msg-Id, which the Publisher
	// reuses for its own retries.
	CodeUnknown ErrorCode = "unknown"
)

// Sentinels with only a Code set, for errors.Is:
//
//	if errors.Is(err, broker.ErrBroadcastLevel) { ... }
var (
	// ErrInvalid matches every *Error with CodeInvalid.
	ErrInvalid = &Error{Code: CodeInvalid}
	// ErrBroadcastLevel matches every *Error with CodeBroadcastLevel.
	ErrBroadcastLevel = &Error{Code: CodeBroadcastLevel}
	// ErrTooLarge matches every *Error with CodeTooLarge.
	ErrTooLarge = &Error{Code: CodeTooLarge}
	// ErrUnavailable matches every *Error with CodeUnavailable.
	ErrUnavailable = &Error{Code: CodeUnavailable}
	// ErrUnknown matches every *Error with CodeUnknown.
	ErrUnknown = &Error{Code: CodeUnknown}
)

// Error is the typed error of the broker package. It carries a stable Code,
// the offending Field for invalid input, and the underlying cause.
type Error struct {
	// Code says what kind of failure this is.
	Code ErrorCode
	// Field names the invalid input ("name", "group", "clientId", "id",
	// "event", or an option such as "PublisherOptions.Prefix"); empty for
	// other codes.
	Field string
	// Err is the cause, e.g. a *policy.FieldError, a *policy.LevelError or a
	// nats.go error. It may be nil.
	Err error
}

// Error formats the error as "broker: <code>[ <field>]: <cause>".
func (e *Error) Error() string {
	s := "broker: " + e.Code.text()
	if e.Field != "" {
		s += " " + e.Field
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, &broker.Error{Code: broker.CodeTooLarge}) and
// errors.Is(err, broker.ErrTooLarge) both work.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == e.Code
}

func (c ErrorCode) text() string {
	switch c {
	case CodeBroadcastLevel:
		return "broadcast level"
	case CodeTooLarge:
		return "too large"
	case "":
		return "error"
	}
	return string(c)
}

func invalid(field string, err error) *Error {
	return &Error{Code: CodeInvalid, Field: field, Err: err}
}
