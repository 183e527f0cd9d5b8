package redisstore_test

import (
	"context"
	"log"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/redisstore"
)

// An App whose installations live in Redis (a single server, Sentinel or Cluster: any
// redis.UniversalClient), shared by every replica: each portal's refresh runs under a
// per-portal lock with a lease, so it happens once per expiry fleet-wide. Run Redis with
// persistence (AOF): a lost dataset means every portal must reinstall the app.
func Example() {
	client := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR")})
	defer client.Close()
	store, err := redisstore.New(client, redisstore.WithKeyPrefix("myapp:b24:"))
	if err != nil {
		log.Fatal(err)
	}
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     os.Getenv("B24_CLIENT_ID"),
		ClientSecret: os.Getenv("B24_CLIENT_SECRET"),
		Store:        store,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	go app.KeepAliveLoop(context.Background(), 0, b24oauth.KeepAliveOptions{}, nil) // redisstore is a Lister
}
