package b24oauth

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors, matched with errors.Is from any call that returns them.
var (
	// ErrNotInstalled reports that no installation is stored for a member_id: the app was never
	// installed on that portal, or it was uninstalled.
	ErrNotInstalled = errors.New("b24oauth: application is not installed on this portal")

	// ErrAlreadyInstalled is returned by Creator.Create (and CreateInstallation) when the
	// member_id already has an installation: nothing was written.
	ErrAlreadyInstalled = errors.New("b24oauth: an installation is already stored for this portal")

	// ErrAppTokenMismatch reports an event whose application_token does not match the one stored
	// for its member_id: it was not sent by Bitrix24 for this installation.
	ErrAppTokenMismatch = errors.New("b24oauth: application_token does not match the stored installation")

	// ErrUntrustedEndpoint reports an endpoint or OAuth server outside the allowed set. Nothing
	// was sent to it.
	ErrUntrustedEndpoint = errors.New("b24oauth: untrusted endpoint")

	// ErrIsAdminNotInit is returned by AuthManager.IsAdmin before B24OAuth.InitIsAdmin succeeded.
	ErrIsAdminNotInit = errors.New("b24oauth: IsAdmin is not initialized; call InitIsAdmin first")

	// ErrDestroyed is returned by every call on a client after Destroy.
	ErrDestroyed = errors.New("b24oauth: client is destroyed")
)

// APIError is an error reply of the Bitrix24 REST API (v2 or v3).
//
// Match it with errors.As. Is reports whether a target *APIError has the same Code (or the same
// Status when the target's Code is empty), so errors.Is(err, &APIError{Code: "ACCESS_DENIED"})
// works too.
type APIError struct {
	Code        string            // e.g. "ERROR_CORE", "QUERY_LIMIT_EXCEEDED", "BITRIX_REST_V3_EXCEPTION_..."
	Description string            // error_description (v2) or message (v3)
	Status      int               // HTTP status of the reply; 0 for an error inside a batch
	Method      string            // the REST method called
	Version     APIVersion        // APIVersionV2 or APIVersionV3
	Validation  []ValidationError // v3 field errors, if any
	Argument    string            // v2 "argument", when the portal names one
}

// ValidationError is one field error of a REST v3 error reply.
type ValidationError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error describes the reply: method, code, HTTP status, description and validation errors.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("b24oauth: ")
	if e.Method != "" {
		b.WriteString(e.Method)
		b.WriteString(": ")
	}
	if e.Code != "" {
		b.WriteString(e.Code)
	} else {
		b.WriteString("error")
	}
	if e.Status != 0 {
		b.WriteString(" (HTTP ")
		b.WriteString(strconv.Itoa(e.Status))
		b.WriteString(")")
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	for _, v := range e.Validation {
		b.WriteString("; ")
		if v.Field != "" {
			b.WriteString(v.Field)
			b.WriteString(": ")
		}
		b.WriteString(v.Message)
	}
	return b.String()
}

// Is matches another *APIError by Code, or by Status when the target has no Code.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	if !ok {
		return false
	}
	if t.Code != "" {
		return strings.EqualFold(t.Code, e.Code)
	}
	return t.Status != 0 && t.Status == e.Status
}

// RefreshTokenError reports a failed token refresh: the OAuth server refused it (Code
// "invalid_grant", "invalid_client", ...) or could not be reached (Code empty, Err set).
//
// It reaches the caller of the REST call that needed the refresh, matched with errors.As. Is
// matches a target *RefreshTokenError by Code.
type RefreshTokenError struct {
	Code        string // OAuth error code, e.g. "invalid_grant"; empty for a transport failure
	Description string // error_description, if the server sent one
	Status      int    // HTTP status of the OAuth server's reply; 0 when there was none
	MemberID    string // the portal whose refresh failed
	Err         error  // the underlying cause (network error, ErrUntrustedEndpoint, ...), if any
}

// Error describes the failure: member_id, OAuth error code, HTTP status, description and cause.
func (e *RefreshTokenError) Error() string {
	var b strings.Builder
	b.WriteString("b24oauth: token refresh failed")
	if e.MemberID != "" {
		b.WriteString(" for member ")
		b.WriteString(e.MemberID)
	}
	writeOAuthFailure(&b, e.Code, e.Status, e.Description, e.Err)
	return b.String()
}

// writeOAuthFailure appends what the OAuth server said of a failed grant to b: the code, the
// HTTP status, the description and the cause, each when present.
func writeOAuthFailure(b *strings.Builder, code string, status int, description string, err error) {
	if code != "" {
		b.WriteString(": ")
		b.WriteString(code)
	}
	if status != 0 {
		b.WriteString(" (HTTP ")
		b.WriteString(strconv.Itoa(status))
		b.WriteString(")")
	}
	if description != "" {
		b.WriteString(": ")
		b.WriteString(description)
	}
	if err != nil {
		b.WriteString(": ")
		b.WriteString(err.Error())
	}
}

// Unwrap returns the underlying cause.
func (e *RefreshTokenError) Unwrap() error { return e.Err }

// Is matches another *RefreshTokenError by Code (any refresh error when the target's Code is empty).
func (e *RefreshTokenError) Is(target error) bool {
	t, ok := target.(*RefreshTokenError)
	if !ok {
		return false
	}
	return t.Code == "" || t.Code == e.Code
}

// Revoked reports whether the refresh token was refused for good (invalid_grant): the portal's
// administrator must reinstall the application (or open it again) to grant new tokens.
func (e *RefreshTokenError) Revoked() bool { return e.Code == "invalid_grant" }
