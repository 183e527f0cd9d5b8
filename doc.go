// Package b24oauth is a Bitrix24 OAuth 2.0 SDK for Go backends that serve many Bitrix24
// portals from one application.
//
// A working multi-tenant backend is a store, an App, two handlers and ClientForMember:
//
//	store, err := b24oauth.NewFileStore("/var/lib/myapp/b24oauth") // or pgstore, redisstore
//	if err != nil { ... }
//	app, err := b24oauth.NewApp(b24oauth.AppConfig{
//		ClientID:     os.Getenv("B24_CLIENT_ID"),
//		ClientSecret: os.Getenv("B24_CLIENT_SECRET"),
//		Store:        store,
//	})
//	if err != nil { ... }
//	defer app.Close() // writes any refreshed pair the store has not taken yet
//	go app.KeepAliveLoop(ctx, 0, b24oauth.KeepAliveOptions{}, nil) // idle portals never lapse
//
//	mux := http.NewServeMux()
//	mux.Handle("POST /bitrix24/install", app.InstallHandler())     // the app's install URL
//	mux.Handle("POST /bitrix24/uninstall", app.UninstallHandler()) // the ONAPPUNINSTALL handler
//	mux.HandleFunc("GET /portal/{member}/deals", func(w http.ResponseWriter, r *http.Request) {
//		client, err := app.ClientForMember(r.Context(), r.PathValue("member"))
//		if errors.Is(err, b24oauth.ErrNotInstalled) {
//			http.NotFound(w, r)
//			return
//		}
//		...
//		for deal, err := range client.List(r.Context(), "crm.deal.list", nil) { ... }
//	})
//
// The handlers receive ONAPPINSTALL, ONAPPUPDATE, the install page POST of apps with a UI and
// ONAPPUNINSTALL, and verify every install with Bitrix24 before anything is stored (the OAuth
// server vouches for the token, the portal says its user is an administrator: see
// [App.InstallHandler]). Each portal's tokens live in a pluggable [TokenStore], keyed by
// member_id. The client [App.ClientForMember] returns ([B24OAuth]) refreshes its tokens by
// itself, exactly once however many goroutines (or processes sharing a store) need it, and
// writes every refreshed pair back to storage; it limits its rate to what the portal accepts.
//
// A client can also be used on its own, with [New]: REST v2 and v3 calls, batch, list
// iterators, the auth manager, refresh callbacks and custom refreshers, typed errors
// ([APIError], [RefreshTokenError]). Package b24test is a strict fake Bitrix24 for tests.
package b24oauth
