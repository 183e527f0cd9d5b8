// Package b24oauth is a Bitrix24 OAuth 2.0 client for Go backends that serve many Bitrix24
// portals from one application.
//
// It receives the ONAPPINSTALL, ONAPPUPDATE and ONAPPUNINSTALL events, persists each portal's
// tokens in a pluggable [TokenStore], and hands business code a ready client per portal with
// [App.ClientForMember]. The client ([B24OAuth]) refreshes its tokens by itself, exactly once
// however many goroutines (or processes sharing a store) need it, and writes every refreshed pair
// back to storage.
package b24oauth
