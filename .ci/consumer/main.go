// Command consumer is a user's program as `make modcheck` builds it: in a fresh module outside
// the repository, with every module of ours fetched through a module proxy at the release
// version. It imports every published package (a new module adds its import here; the check
// fails until it does; a module of commands only, such as examples/multitenant, cannot be
// imported and is built instead) and uses a symbol of each, then prints b24oauth.Version.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/otelb24"
	"github.com/b24go/b24oauth/pgstore"
	"github.com/b24go/b24oauth/redisstore"
	"github.com/b24go/b24oauth/storetest"
)

func main() {
	srv := b24test.NewServer()
	defer srv.Close()

	store := b24oauth.NewMemoryStore()
	if _, err := store.Load(context.Background(), strings.Repeat("0", 32)); err == nil {
		fail("an empty MemoryStore loaded an installation")
	}
	if !strings.Contains(pgstore.Schema("b24oauth_installations"), "b24oauth_installations") {
		fail("pgstore.Schema does not name its table")
	}
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: srv.ClientID(), ClientSecret: srv.ClientSecret(), Store: store,
		Observer: otelb24.NewObserver(), // OpenTelemetry's global providers: no-ops until set
	})
	if err != nil {
		fail("NewApp with the otelb24 Observer: " + err.Error())
	}
	_ = app.Close()
	_ = redisstore.WithKeyPrefix("consumer:")
	_ = storetest.Run

	fmt.Println(b24oauth.Version)
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "consumer:", msg)
	os.Exit(1)
}
