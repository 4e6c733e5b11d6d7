package spindle

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldViolation names one bad field of a request (from google.rpc.BadRequest).
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed call: the gRPC status code and message, the google.rpc.ErrorInfo reason and
// metadata when the server sent one, and every google.rpc.BadRequest field violation.
type Error struct {
	Code            codes.Code
	Message         string
	Reason          string
	Domain          string
	Metadata        map[string]string
	FieldViolations []FieldViolation
	Status          *status.Status
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "spindle: %s: %s", e.Code, e.Message)
	for _, v := range e.FieldViolations {
		fmt.Fprintf(&b, " [%s: %s]", v.Field, v.Description)
	}
	return b.String()
}

// GRPCStatus lets status.FromError and status.Code see through an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// Field returns the violation naming field (exactly, or as the last dotted component), if any.
func (e *Error) Field(field string) (FieldViolation, bool) {
	for _, v := range e.FieldViolations {
		if v.Field == field || strings.HasSuffix(v.Field, "."+field) {
			return v, true
		}
	}
	return FieldViolation{}, false
}

// FromError turns an error returned by a gRPC call into an *Error (nil stays nil; an error that carries
// no gRPC status becomes codes.Unknown).
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return already
	}
	st, _ := status.FromError(err)
	e := &Error{Code: st.Code(), Message: st.Message(), Status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
		}
	}
	return e
}

// AsError returns err as an *Error when it is one (or wraps one).
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Code is the gRPC status code of err: codes.OK for nil, codes.Unknown for an error without a status.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if e, ok := AsError(err); ok {
		return e.Code
	}
	return status.Code(err)
}

// IsInvalidArgument, IsNotFound, ... tell an error's status code at a glance.
func IsInvalidArgument(err error) bool    { return Code(err) == codes.InvalidArgument }
func IsNotFound(err error) bool           { return Code(err) == codes.NotFound }
func IsAlreadyExists(err error) bool      { return Code(err) == codes.AlreadyExists }
func IsFailedPrecondition(err error) bool { return Code(err) == codes.FailedPrecondition }
func IsResourceExhausted(err error) bool  { return Code(err) == codes.ResourceExhausted }
func IsUnavailable(err error) bool        { return Code(err) == codes.Unavailable }
func IsCanceled(err error) bool           { return Code(err) == codes.Canceled }
