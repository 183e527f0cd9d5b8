package redisstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/sealtest"
	"github.com/b24go/b24oauth/redisstore"
	"github.com/b24go/b24oauth/storetest"
)

// A sealstore over redisstore passes the suite.
func TestSealedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		s, _ := sealtest.Wrap(t, newStore(t, testClient(t)))
		return s
	})
}

// Every key of the store's prefix, read with go-redis, holds no token in clear: only values
// sealed with the store's key; the member_id, domain, endpoints and state stay readable.
func TestSealedKeysHoldNoToken(t *testing.T) {
	client := testClient(t)
	prefix := newPrefix(t, client)
	inner, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	s, key := sealtest.Wrap(t, inner)
	sealtest.Run(t, s, key, "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e01", func(t *testing.T) string {
		ctx := context.Background()
		var dump strings.Builder
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			dump.WriteString(k + ":\n")
			switch typ := client.Type(ctx, k).Val(); typ {
			case "hash":
				fields, err := client.HGetAll(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				for f, v := range fields {
					dump.WriteString(f + "=" + v + "\n")
				}
			case "string":
				dump.WriteString(client.Get(ctx, k).Val() + "\n")
			default:
				t.Fatalf("key %s is a %s; the test reads hashes and strings", k, typ)
			}
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		return dump.String()
	})
}
