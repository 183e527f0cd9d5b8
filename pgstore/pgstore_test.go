package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/pgstore"
	"github.com/b24go/b24oauth/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const envDSN = "B24OAUTH_TEST_POSTGRES"

// testPool connects to the server named by B24OAUTH_TEST_POSTGRES: it skips the test when the
// variable is unset and fails it when the server cannot be reached.
func testPool(tb testing.TB, maxConns int32) *pgxpool.Pool {
	tb.Helper()
	dsn := os.Getenv(envDSN)
	if dsn == "" {
		tb.Skip(envDSN + " is not set: set it to a PostgreSQL DSN, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable, to run the pgstore tests")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		tb.Fatalf("%s: %v", envDSN, err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("%s is set but the pool cannot be created: %v", envDSN, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		tb.Fatalf("%s is set but PostgreSQL is unreachable: %v", envDSN, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// newTable returns a fresh table name, dropped when the test ends.
func newTable(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	name := randomName("b24oauth_test_")
	tb.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			tb.Errorf("drop table %s: %v", name, err)
		}
	})
	return name
}

func newStore(tb testing.TB, pool *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	tb.Helper()
	opts = append([]pgstore.Option{pgstore.WithTable(newTable(tb, pool))}, opts...)
	s, err := pgstore.New(context.Background(), pool, opts...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		return newStore(t, testPool(t, 0))
	})
}

// m1 is the member id of the tests, shaped like a real one (32 lowercase hex).
const m1 = "0000000000000000000000000000a001"

func installation(member string) b24oauth.Installation {
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			MemberID:     member,
			AccessToken:  "access-1",
			RefreshToken: "refresh-1",
			Expires:      1_700_000_000,
			Domain:       "portal.bitrix24.com",
		},
		State:     b24oauth.StateActive,
		UpdatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC),
	}
}

func mustSave(t *testing.T, s b24oauth.TokenStore, inst b24oauth.Installation) {
	t.Helper()
	if err := s.Save(context.Background(), inst); err != nil {
		t.Fatalf("Save: %v", err)
	}
}

func mustLoad(t *testing.T, s b24oauth.TokenStore, member string) b24oauth.Installation {
	t.Helper()
	got, err := s.Load(context.Background(), member)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return got
}

func backendPID(t *testing.T, pool *pgxpool.Pool) int32 {
	t.Helper()
	var pid int32
	if err := pool.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatalf("pg_backend_pid: %v", err)
	}
	return pid
}

// An Update waiting for a row lock that another transaction holds gives up at its context's
// deadline, rolls back and leaves its connection in the pool, usable.
func TestUpdateLockWaitHonoursDeadline(t *testing.T) {
	pool := testPool(t, 0)
	table := newTable(t, pool)
	holderStore, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, holderStore, installation(m1))

	// The waiter has a pool of one connection, so its backend pid tells whether that
	// connection survived.
	waiterPool := testPool(t, 1)
	waiter, err := pgstore.New(context.Background(), waiterPool, pgstore.WithTable(table), pgstore.WithoutMigrate())
	if err != nil {
		t.Fatal(err)
	}
	pidBefore := backendPID(t, waiterPool)

	holder, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(context.Background(), `SELECT 1 FROM `+pgx.Identifier{table}.Sanitize()+` WHERE member_id = '`+m1+`' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	called := false
	err = waiter.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return cur, nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Update while the row is locked = %v; want an error matching context.DeadlineExceeded", err)
	}
	if called {
		t.Fatal("Update called fn without the row lock")
	}
	if pidAfter := backendPID(t, waiterPool); pidAfter != pidBefore {
		t.Errorf("the waiter's connection was replaced (backend pid %d, then %d); want it back in the pool", pidBefore, pidAfter)
	}

	if err := holder.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = waiter.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.AccessToken = "access-2"
		return cur, nil
	})
	if err != nil {
		t.Fatalf("Update after the lock was released: %v", err)
	}
	if got := mustLoad(t, holderStore, m1); got.AccessToken != "access-2" {
		t.Errorf("AccessToken = %q; want access-2", got.AccessToken)
	}
}

// A cancellation (no deadline) during the lock wait ends the wait too.
func TestUpdateLockWaitHonoursCancel(t *testing.T) {
	pool := testPool(t, 0)
	table := newTable(t, pool)
	s, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, installation(m1))
	holderDone := make(chan struct{})
	holderIn := make(chan struct{})
	go func() {
		_ = s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			close(holderIn)
			<-holderDone
			return cur, nil
		})
	}()
	<-holderIn
	defer close(holderDone)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	called := atomic.Bool{}
	go func() {
		errc <- s.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			called.Store(true)
			return cur, nil
		})
	}()
	// Wait until the second Update is blocked on the row lock, then cancel it.
	waitFor(t, func() bool {
		var n int
		err := pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0`, table).Scan(&n)
		return err == nil && n > 0
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Update = %v; want an error matching context.Canceled", err)
	}
	if called.Load() {
		t.Error("cancelled Update called fn")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The query columns follow the record.
func TestColumns(t *testing.T) {
	pool := testPool(t, 0)
	table := newTable(t, pool)
	s, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	inst := installation(m1)
	mustSave(t, s, inst)
	err = s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.State = b24oauth.StateRevoked
		cur.Expires = 1_800_000_000
		cur.UpdatedAt = time.Time{}
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		domain, state string
		expires       int64
		updated       *time.Time
		token         string
	)
	err = pool.QueryRow(context.Background(),
		`SELECT domain, state, expires, updated_at, data->>'refresh_token' FROM `+pgx.Identifier{table}.Sanitize()+` WHERE member_id = '`+m1+`'`).
		Scan(&domain, &state, &expires, &updated, &token)
	if err != nil {
		t.Fatal(err)
	}
	if domain != inst.Domain || state != "revoked" || expires != 1_800_000_000 || updated != nil || token != "refresh-1" {
		t.Errorf("row = %q %q %d %v %q; want %q revoked 1800000000 <nil> refresh-1", domain, state, expires, updated, token, inst.Domain)
	}
}

func TestWithTableSchemaQualified(t *testing.T) {
	pool := testPool(t, 0)
	schema := randomName("b24oauth_test_schema_")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	s, err := pgstore.New(ctx, pool, pgstore.WithTable(schema+".Tokens"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mustSave(t, s, installation(m1))
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "Tokens"}.Sanitize()).Scan(&n); err != nil {
		t.Fatalf("the table %s.\"Tokens\" was not created: %v", schema, err)
	}
	if n != 1 {
		t.Errorf("rows in %s.\"Tokens\" = %d; want 1", schema, n)
	}
	if got := mustLoad(t, s, m1); got.AccessToken != "access-1" {
		t.Errorf("AccessToken = %q; want access-1", got.AccessToken)
	}
}

func TestWithTableRejectsUnsafeNames(t *testing.T) {
	// The pool never connects: a name is refused before any query.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, name := range []string{
		"", "1tokens", "a.b.c", "tokens; DROP TABLE x", "to kens", `to"kens`, "tokens--", ".tokens", "tokens.",
		"schema.", strings.Repeat("a", 64), "tökens",
	} {
		if _, err := pgstore.New(context.Background(), pool, pgstore.WithTable(name)); err == nil || !strings.Contains(err.Error(), "invalid table name") {
			t.Errorf("New(WithTable(%q)) = %v; want an invalid table name error", name, err)
		}
	}
	if _, err := pgstore.New(context.Background(), nil); err == nil {
		t.Error("New(nil pool) succeeded")
	}
}

// Replicas starting together all succeed in creating (or finding) the table.
func TestNewConcurrent(t *testing.T) {
	pool := testPool(t, 10)
	table := newTable(t, pool)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent New: %v", err)
		}
	}
	s, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, installation(m1))
	// Running the migration again keeps the data.
	s2, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, s2, m1); got.AccessToken != "access-1" {
		t.Errorf("AccessToken after a second New = %q; want access-1", got.AccessToken)
	}
}

func TestWithoutMigrate(t *testing.T) {
	pool := testPool(t, 0)
	ctx := context.Background()
	table := newTable(t, pool)
	_, err := pgstore.New(ctx, pool, pgstore.WithTable(table), pgstore.WithoutMigrate())
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "pgstore.Schema") {
		t.Fatalf("New(WithoutMigrate) without the table = %v; want an error saying it does not exist and how to create it", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = $1`, table).Scan(&n); err != nil || n != 0 {
		t.Fatalf("New(WithoutMigrate) created the table (count %d, err %v)", n, err)
	}

	if _, err := pool.Exec(ctx, pgstore.Schema(table)); err != nil {
		t.Fatalf("running Schema(%q): %v", table, err)
	}
	s, err := pgstore.New(ctx, pool, pgstore.WithTable(table), pgstore.WithoutMigrate())
	if err != nil {
		t.Fatalf("New(WithoutMigrate) after Schema: %v", err)
	}
	mustSave(t, s, installation(m1))
	if got := mustLoad(t, s, m1); got.RefreshToken != "refresh-1" {
		t.Errorf("RefreshToken = %q; want refresh-1", got.RefreshToken)
	}
}

func TestWrongTableShape(t *testing.T) {
	pool := testPool(t, 0)
	table := newTable(t, pool)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE `+pgx.Identifier{table}.Sanitize()+` (member_id text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]pgstore.Option{{pgstore.WithTable(table)}, {pgstore.WithTable(table), pgstore.WithoutMigrate()}} {
		_, err := pgstore.New(context.Background(), pool, opts...)
		if err == nil || !strings.Contains(err.Error(), "columns") {
			t.Errorf("New on a table of another shape = %v; want an error about its columns", err)
		}
	}
}

func TestSchemaDefault(t *testing.T) {
	if got := pgstore.Schema(""); !strings.Contains(got, `"`+pgstore.DefaultTable+`"`) {
		t.Errorf("Schema(\"\") = %s; want the default table", got)
	}
	if got := pgstore.Schema("auth.Tokens"); !strings.Contains(got, `"auth"."Tokens"`) {
		t.Errorf("Schema(auth.Tokens) = %s; want \"auth\".\"Tokens\"", got)
	}
}

// A record that does not decode is an error, never ErrNotInstalled, and Update leaves it alone.
func TestCorruptRecord(t *testing.T) {
	pool := testPool(t, 0)
	table := newTable(t, pool)
	s, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{table}.Sanitize()+
		` (member_id, domain, state, expires, data) VALUES ('`+m1+`', '', '', 0, '{"user_id": "not a number"}')`); err != nil {
		t.Fatal(err)
	}
	_, err = s.Load(context.Background(), m1)
	if err == nil || errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("Load of a corrupt record = %v; want an error other than ErrNotInstalled", err)
	}
	called := false
	err = s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return cur, nil
	})
	if err == nil || errors.Is(err, b24oauth.ErrNotInstalled) || called {
		t.Errorf("Update of a corrupt record = %v (fn called: %v); want an error other than ErrNotInstalled, fn not called", err, called)
	}
}

func BenchmarkUpdate(b *testing.B) {
	storetest.BenchmarkUpdate(b, func(b *testing.B) b24oauth.TokenStore { return newStore(b, testPool(b, 34)) })
}
