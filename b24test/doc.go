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
// # Events
//
// The app binds events with event.bind (online, to a handler URL, or
// offline), lists them with event.get and removes them with event.unbind; a
// second identical binding gets the real portal's answer, 400 ERROR_CORE
// "Unable to set event handler: Handler already binded". crm.deal.add,
// crm.deal.update and crm.deal.delete (directly or in a batch), and
// Portal.AddDeal and UpdateDeal (a user, or an automation rule, acting in the
// portal) fire ONCRMDEALADD, ONCRMDEALUPDATE and ONCRMDEALDELETE: an online
// binding gets the form POST over HTTP from the fake's own client (event,
// event_handler_id, data[FIELDS][ID], ts, auth[...] with a fresh access token
// of the acting user, or no tokens for an automation rule), in order, never
// retried; Server.Deliveries records each answer and WaitForDeliveries waits
// for the ones under way. An offline binding puts the event into the portal's
// offline queue (one entry per object: a later change updates it), served by
// event.offline.get (clear=0 reserves a page under a process_id, so parallel
// callers get disjoint pages), event.offline.clear, event.offline.error and
// event.offline.list, and signalled by ONOFFLINEEVENT to its handlers. Removing
// the app removes its bindings and its queue. Portal.NewEvent and ForgedEvent
// build events to send to a handler directly; Portal.OpenPage and
// OpenPlacement build the POST of the app's pages opened by any user.
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
//   - Event handlers get 10 s to answer (WithDeliveryTimeout); the real limit
//     is undocumented. An ordinary event's auth block has expires and user_id
//     besides the documented keys (as real captures of app events do), and no
//     refresh token; ONOFFLINEEVENT's has the refresh token too, as its page
//     shows. Offline EVENT_DATA holds the deal ID as a JSON number.
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
