// Package b24test is a fake Bitrix24 for tests: an OAuth server and any
// number of portals, served over real HTTPS by one net/http/httptest TLS
// server that routes by the Host header. Think httptest.NewServer for
// Bitrix24:
//
//	s := b24test.NewServer()
//	defer s.Close()
//	p := s.AddPortal()
//	client := s.Client() // trusts the test cert, sends *.example.com to the fake
//	// call https://<p.Domain()>/rest/profile with p.Tokens().AccessToken,
//	// refresh at https://oauth.example.com/oauth/token/ with s.ClientID()/s.ClientSecret()
//
// The OAuth server lives at https://oauth.example.com (token endpoint
// /oauth/token/, GET query or POST form; grant_type refresh_token and
// authorization_code). Portals live at https://<name>.example.com and serve
// REST v2 (/rest/<method>[.json]: profile, app.info, user.admin, server.time,
// scope, crm.deal.list/get/add/update/delete, tasks.task.list/get/add, batch)
// and REST v3 (/rest/api/<method>: crm.deal.get, crm.deal.list, profile).
// Server.HandleMethod and Server.HandleMethodV3 add methods. Portals also
// serve the authorization-code flow's https://<name>.example.com/oauth/authorize/
// ?client_id=...&state=...: it "logs in" user 1 at once and redirects (302) to
// the redirect URI set with WithRedirectURI or Server.SetRedirectURI, with
// code (single-use, valid 30 s), state, domain, member_id, scope and
// server_domain; an unknown client_id or a portal whose app was uninstalled
// gets an error page and no redirect. Portal.AuthCode issues a code directly.
// Event helpers
// (Portal.InstallEvent, UpdateEvent, UninstallEvent, InstallPage) build the
// POSTs Bitrix24 sends to an app, with real token pairs.
//
// The fake is strict, like the real thing: wrong tokens, expired tokens,
// reused refresh tokens, unknown methods and exceeded limits get the real
// error codes and HTTP statuses; batch replies use PHP's quirks ([] for
// empty maps, JSON arrays for 0..n-1 keys); list methods page by 50 with
// start/next/total and the start=-1 mode. It is written from the protocol
// facts only and imports nothing from the b24oauth client.
//
// # Uncertain points of the protocol and their knobs
//
//   - Refresh token lifetime: WithRefreshTokenTTL (default 180 days per the
//     docs; real tokens encode 30 days).
//   - Refresh token single use: WithRefreshTokenReuse (default false: reuse
//     gets 400 invalid_grant).
//   - Old access token after a refresh: WithOldAccessTokenValid (default
//     false: revoked, 401 invalid_token; true: valid until it expires, as the
//     portal's token cache may allow).
//   - OAuth error statuses: WithOAuthErrorStatus (defaults invalid_grant 400,
//     invalid_request 400, invalid_client 401; others 400).
//   - scope of token replies: WithTokenScope (default: the portal's comma
//     list; real local apps get "app").
//   - REST v3 auth/limit error body: WithV3AuthErrorShape ("classic",
//     default, or "v3"). REST v3 reads the token from the JSON body's auth
//     field and from an Authorization: Bearer header, never from the query.
//   - Operating limit: WithOperatingLimit (default 10 min window, 480 s) with
//     per-method durations from Server.SetMethodDuration (default 0, so it
//     never triggers unless asked to).
//   - Rate limit: WithRateLimit (off by default).
//   - invalid_token's description is "The access token provided is invalid".
//   - Tokens of an uninstalled app answer 401 invalid_token (they are revoked
//     at uninstall), not APPLICATION_NOT_FOUND.
//   - Classic CRM methods report errors with an empty code
//     ({"error":"","error_description":"Not found"}, HTTP 400).
//   - REST v3 crm.deal.list takes {"select":[...], "filter":[[field, op,
//     value], ...], "order":{"id":"DESC"}, "pagination":{"limit":50,
//     "page":1, "offset":0}} with camelCase fields; the pagination shape is
//     the fake's own choice. Unknown v3 methods answer 404
//     BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION.
//
// Query strings, form bodies and batch sub-commands are parsed with PHP
// parse_str semantics (a[b][c]=1, a[]=x), so a bracket key that contains
// "=" (filter[>=ID]) must be percent-encoded inside a batch command, as
// http_build_query does; EncodePHPQuery builds such strings.
//
// Time: WithClock replaces the clock for every expiry and limit decision;
// Clock is a ready-made manual clock. Counters (Server.Refreshes,
// Server.TokenRequests, Portal.Requests, Portal.BatchSubcalls,
// Portal.Rejections, ...) let tests assert how a client behaved.
//
// For a client running in another OS process, pass Server.URL to it and
// build its HTTP client with ClientFor (it skips certificate verification:
// tests only).
package b24test
