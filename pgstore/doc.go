// Package pgstore is a [b24oauth.TokenStore] kept in PostgreSQL, through a pgx v5 connection
// pool, for applications that run several replicas against one database.
//
// Usage:
//
//	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
//	if err != nil {
//		return err
//	}
//	store, err := pgstore.New(ctx, pool) // creates the table b24oauth_installations if missing
//	if err != nil {
//		return err
//	}
//	app, err := b24oauth.NewApp(b24oauth.AppConfig{
//		ClientID:     clientID,
//		ClientSecret: clientSecret,
//		Store:        store,
//	})
//
// # Schema
//
// One row per installation, keyed by member_id:
//
//	CREATE TABLE IF NOT EXISTS "b24oauth_installations" (
//		member_id  text        PRIMARY KEY,
//		domain     text        NOT NULL,
//		state      text        NOT NULL,
//		expires    bigint      NOT NULL,
//		updated_at timestamptz,
//		data       jsonb       NOT NULL
//	)
//
// data holds the whole [b24oauth.Installation] in its JSON form and is what Load returns; the
// other columns copy a few of its fields (updated_at is NULL for a zero UpdatedAt) so that
// operators can query them. Schema returns this statement for any table name, for users who run
// their own migrations and pass [WithoutMigrate].
//
// By default New runs that statement under a transaction-scoped advisory lock, so replicas that
// start at the same moment do not race each other's CREATE TABLE.
//
// # Locking
//
// Update runs one transaction: SELECT ... FOR UPDATE, the caller's function, UPDATE, COMMIT.
// The row lock keeps every other Update and Save of the same member_id out until the commit, in
// this process and in any other one sharing the database; Delete waits for it too. When the
// context has a deadline, the wait for the row lock is bounded by PostgreSQL's lock_timeout,
// set a little before that deadline, so a wait that would outlive the context ends with an
// error matching context.DeadlineExceeded while the connection goes back to the pool healthy.
//
// A waiting Update holds a pool connection while it waits: size the pool for the number of
// concurrent Updates you expect, and do not call the store from inside the function passed to
// Update (it receives the current record; a nested call needs a second connection).
//
// Only well-formed member_ids (b24oauth.ValidMemberID) reach the database: any other is
// answered without a query. List reads the member_ids in pages of 1000, each after the last
// one of the page before (keyset pagination over the primary key: an index range scan per
// page, no OFFSET).
//
// Strings containing the NUL character cannot be stored: PostgreSQL's text and jsonb types
// reject it, and Save or Update returns an error.
package pgstore
