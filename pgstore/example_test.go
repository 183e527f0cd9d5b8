package pgstore_test

import (
	"context"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/pgstore"
)

// An App whose installations live in PostgreSQL, shared by every replica: each portal is
// refreshed once per expiry fleet-wide (the refresh runs in a SELECT ... FOR UPDATE
// transaction on its row). New creates the table if it is missing; size the pool for the
// concurrent Updates you expect (each holds a connection while it waits for the row lock).
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL")) // postgres://user@host/db
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithTable("b24_installations"))
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
	go app.KeepAliveLoop(ctx, 0, b24oauth.KeepAliveOptions{}, nil) // pgstore is a Lister
	// mux.Handle("POST /bitrix24/install", app.InstallHandler()) ... as in package b24oauth.
}

// Schema gives the table's DDL for a migration tool of your own; then turn New's
// CREATE TABLE off.
func ExampleSchema() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	log.Println(pgstore.Schema("b24_installations")) // put this in your migrations
	store, err := pgstore.New(ctx, pool, pgstore.WithTable("b24_installations"), pgstore.WithoutMigrate())
	if err != nil {
		log.Fatal(err)
	}
	_ = store
}
