package sealstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/sealstore"
)

// Seal the tokens of a store with keys from the environment. The new key comes first and
// seals; the old one still opens what it sealed until every record has been written again.
func Example() {
	// "<new key>,<old key>": in production your secret manager sets it, never the code;
	// make a key with `openssl rand -base64 32`.
	os.Setenv("B24OAUTH_SEAL_KEYS", "w/7L2ctHCrDG6P5tYPta7GjMhu+gzZOIg0qn/NELvfI=,nD7qCVyS79GPBIyp62tkNjTt8NB5Xx+r114Vov3BYBM=")

	keys, err := sealstore.ParseKeys(os.Getenv("B24OAUTH_SEAL_KEYS"))
	if err != nil {
		log.Fatal(err)
	}
	inner := b24oauth.NewMemoryStore() // or a FileStore, pgstore, redisstore
	store, err := sealstore.New(inner, keys...)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(store) // key ids only
	// Give store to b24oauth.AppConfig.Store; here it is used directly.

	ctx := context.Background()
	err = store.Save(ctx, b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			MemberID:     "b24a1b2c3d4e5f60718293a4b5c6d7e8",
			Domain:       "portal.bitrix24.com",
			AccessToken:  "the-access-token",
			RefreshToken: "the-refresh-token",
		},
		State: b24oauth.StateActive,
	})
	if err != nil {
		log.Fatal(err)
	}

	raw, _ := inner.Load(ctx, "b24a1b2c3d4e5f60718293a4b5c6d7e8")
	fmt.Println("stored:", raw.Domain, strings.HasPrefix(raw.RefreshToken, "b24s1:"+sealstore.KeyID(keys[0])+":"))
	inst, err := store.Load(ctx, "b24a1b2c3d4e5f60718293a4b5c6d7e8")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("loaded:", inst.Domain, inst.RefreshToken)
	// Output:
	// sealstore.Store{inner: *b24oauth.MemoryStore, keys: [e5d6bba2 f0ab09fe], plaintext: allowed}
	// stored: portal.bitrix24.com true
	// loaded: portal.bitrix24.com the-refresh-token
}
