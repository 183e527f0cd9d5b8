package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultTable is the table New uses unless WithTable names another.
const DefaultTable = "b24oauth_installations"

// Store is a b24oauth.TokenStore kept in a PostgreSQL table. It is safe for concurrent use, and
// any number of Stores, in any number of processes, may share one table.
type Store struct {
	pool  *pgxpool.Pool
	table string // quoted, ready to splice into SQL

	loadSQL, lockSQL, saveSQL, createSQL, updateSQL, deleteSQL, listSQL string
	listPage                                                            int // member_ids per List query
}

var (
	_ b24oauth.TokenStore         = (*Store)(nil)
	_ b24oauth.Lister             = (*Store)(nil)
	_ b24oauth.Creator            = (*Store)(nil)
	_ b24oauth.ConditionalDeleter = (*Store)(nil)
)

// listPageSize is how many member_ids one List query reads.
const listPageSize = 1000

// errMalformed is what Load and Update return for a member_id that b24oauth.ValidMemberID
// refuses; the id itself, which came from outside, is not quoted.
var errMalformed = fmt.Errorf("pgstore: malformed member_id: %w", b24oauth.ErrNotInstalled)

// Option configures New.
type Option func(*config) error

type config struct {
	table   []string
	migrate bool
}

// WithTable makes the Store use the named table instead of DefaultTable. name is an SQL
// identifier, optionally schema-qualified ("tokens", "auth.tokens"): each part starts with a
// letter or an underscore, goes on with letters, digits, underscores or dollar signs, and is at
// most 63 bytes long. It is quoted as given, so letter case is kept. Any other name makes New
// fail.
func WithTable(name string) Option {
	return func(c *config) error {
		parts, err := parseTable(name)
		if err != nil {
			return err
		}
		c.table = parts
		return nil
	}
}

// WithoutMigrate stops New from creating the table. The table must then exist, created with
// the statement Schema returns (or an equivalent one); New checks that it does and that it has
// the expected columns, and fails with an explanatory error if not.
func WithoutMigrate() Option {
	return func(c *config) error {
		c.migrate = false
		return nil
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

func parseTable(name string) ([]string, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("pgstore: invalid table name %q: at most one schema qualifier is allowed", name)
	}
	for _, p := range parts {
		if len(p) > 63 || !identRE.MatchString(p) {
			return nil, fmt.Errorf("pgstore: invalid table name %q: each part must match %s and be at most 63 bytes", name, identRE)
		}
	}
	return parts, nil
}

// Schema returns the CREATE TABLE IF NOT EXISTS statement of a table for the Store, for users
// who run their own migrations (together with WithoutMigrate). table is a name as WithTable
// accepts it ("" means DefaultTable); it is quoted in the statement, so it keeps its letter
// case.
func Schema(table string) string {
	if table == "" {
		table = DefaultTable
	}
	return schemaSQL(pgx.Identifier(strings.Split(table, ".")).Sanitize())
}

func schemaSQL(quoted string) string {
	return `CREATE TABLE IF NOT EXISTS ` + quoted + ` (
	member_id  text        PRIMARY KEY,
	domain     text        NOT NULL,
	state      text        NOT NULL,
	expires    bigint      NOT NULL,
	updated_at timestamptz,
	data       jsonb       NOT NULL
)`
}

// New returns a Store that keeps installations in pool's database. Unless WithoutMigrate is
// given, it first creates the table if it does not exist; this is safe when several processes
// start at once. New checks that the table is usable and fails otherwise. The pool stays the
// caller's: New does not close it, and neither does the Store.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: nil pool")
	}
	c := config{table: []string{DefaultTable}, migrate: true}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	t := pgx.Identifier(c.table).Sanitize()
	s := &Store{
		pool:      pool,
		table:     t,
		loadSQL:   `SELECT data FROM ` + t + ` WHERE member_id = $1`,
		lockSQL:   `SELECT data FROM ` + t + ` WHERE member_id = $1 FOR UPDATE`,
		deleteSQL: `DELETE FROM ` + t + ` WHERE member_id = $1`,
		listSQL:   `SELECT member_id FROM ` + t + ` WHERE member_id > $1 ORDER BY member_id LIMIT $2`,
		listPage:  listPageSize,
		saveSQL: `INSERT INTO ` + t + ` (member_id, domain, state, expires, updated_at, data)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (member_id) DO UPDATE SET domain = EXCLUDED.domain, state = EXCLUDED.state,
	expires = EXCLUDED.expires, updated_at = EXCLUDED.updated_at, data = EXCLUDED.data`,
		createSQL: `INSERT INTO ` + t + ` (member_id, domain, state, expires, updated_at, data)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (member_id) DO NOTHING`,
		updateSQL: `UPDATE ` + t + ` SET domain = $2, state = $3, expires = $4, updated_at = $5, data = $6
WHERE member_id = $1`,
	}
	if c.migrate {
		if err := s.migrate(ctx, strings.Join(c.table, ".")); err != nil {
			return nil, err
		}
	}
	if err := s.check(ctx, c.migrate); err != nil {
		return nil, err
	}
	return s, nil
}

// migrate creates the table. Concurrent CREATE TABLE IF NOT EXISTS of one name can fail with a
// unique violation in the catalog, so replicas starting together take turns on an advisory
// lock keyed by the table's name.
func (s *Store) migrate(ctx context.Context, name string) error {
	h := fnv.New64a()
	h.Write([]byte("b24oauth/pgstore:" + name))
	key := int64(h.Sum64())
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, key); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schemaSQL(s.table))
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: create table %s: %w", s.table, err)
	}
	return nil
}

// check fails unless the table exists with the columns the Store uses.
func (s *Store) check(ctx context.Context, migrated bool) error {
	rows, err := s.pool.Query(ctx, `SELECT member_id, domain, state, expires, updated_at, data FROM `+s.table+` WHERE false`)
	if err == nil {
		rows.Close()
		err = rows.Err()
	}
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42P01": // undefined_table
			if !migrated {
				return fmt.Errorf("pgstore: table %s does not exist; create it with the statement pgstore.Schema returns, or drop WithoutMigrate: %w", s.table, err)
			}
		case "42703": // undefined_column
			return fmt.Errorf("pgstore: table %s does not have the columns of pgstore.Schema: %w", s.table, err)
		}
	}
	return fmt.Errorf("pgstore: check table %s: %w", s.table, err)
}

// Load returns the installation of memberID, or an error matching b24oauth.ErrNotInstalled
// when there is none or memberID is malformed (b24oauth.ValidMemberID; no query is sent then).
func (s *Store) Load(ctx context.Context, memberID string) (b24oauth.Installation, error) {
	if !b24oauth.ValidMemberID(memberID) {
		return b24oauth.Installation{}, errMalformed
	}
	var data []byte
	err := s.pool.QueryRow(ctx, s.loadSQL, memberID).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return b24oauth.Installation{}, fmt.Errorf("pgstore: load %q: %w", memberID, b24oauth.ErrNotInstalled)
	}
	if err != nil {
		return b24oauth.Installation{}, fmt.Errorf("pgstore: load %q: %w", memberID, err)
	}
	return decode(memberID, data)
}

// Save inserts inst, or replaces the stored installation of inst.MemberID, which must be well
// formed (b24oauth.ValidMemberID). It waits for an Update of the same member_id in progress to
// finish.
func (s *Store) Save(ctx context.Context, inst b24oauth.Installation) error {
	if !b24oauth.ValidMemberID(inst.MemberID) {
		return errors.New("pgstore: save: malformed member_id (want 32 lowercase hex digits); nothing was written")
	}
	args, err := rowArgs(inst)
	if err != nil {
		return fmt.Errorf("pgstore: save %q: %w", inst.MemberID, err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, s.saveSQL, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: save %q: %w", inst.MemberID, err)
	}
	return nil
}

// Delete removes the installation of memberID. It returns nil when there is none, or when
// memberID is malformed. It waits for an Update of the same member_id in progress to finish
// (the row lock).
func (s *Store) Delete(ctx context.Context, memberID string) error {
	if !b24oauth.ValidMemberID(memberID) {
		return nil // nothing can be stored under it
	}
	if _, err := s.pool.Exec(ctx, s.deleteSQL, memberID); err != nil {
		return fmt.Errorf("pgstore: delete %q: %w", memberID, err)
	}
	return nil
}

// Create inserts inst if its member_id (which must be well formed) has no row, and otherwise
// returns an error matching b24oauth.ErrAlreadyInstalled, writing nothing (b24oauth.Creator):
// one INSERT ... ON CONFLICT DO NOTHING, which waits for a transaction holding the row (an
// Update, a Delete) to end and then sees what it left.
func (s *Store) Create(ctx context.Context, inst b24oauth.Installation) error {
	if !b24oauth.ValidMemberID(inst.MemberID) {
		return errors.New("pgstore: create: malformed member_id (want 32 lowercase hex digits); nothing was written")
	}
	args, err := rowArgs(inst)
	if err != nil {
		return fmt.Errorf("pgstore: create %q: %w", inst.MemberID, err)
	}
	created := false
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, s.createSQL, args...)
		created = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: create %q: %w", inst.MemberID, err)
	}
	if !created {
		return fmt.Errorf("pgstore: create %q: %w", inst.MemberID, b24oauth.ErrAlreadyInstalled)
	}
	return nil
}

// DeleteIf locks the row of memberID, calls fn with the stored installation and deletes the row
// if fn returns nil, in one transaction (b24oauth.ConditionalDeleter): a Save, Create or
// Update of the member waits for it and then sees the row gone. If fn fails, nothing is
// deleted and its error is returned unchanged. If there is no row, or memberID is malformed,
// DeleteIf returns an error matching b24oauth.ErrNotInstalled without calling fn. fn must not
// use the Store. ctx bounds the wait for the lock; once fn has returned nil, the delete is
// committed even if ctx has ended (within a 10s bound of its own).
func (s *Store) DeleteIf(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) error) error {
	if !b24oauth.ValidMemberID(memberID) {
		return errMalformed
	}
	return s.withLockedRow(ctx, "delete", memberID, func(cur b24oauth.Installation) (string, []any, error) {
		if err := fn(cur); err != nil {
			return "", nil, err
		}
		return s.deleteSQL, []any{memberID}, nil
	})
}

// withLockedRow runs, in one transaction, f with the row of memberID locked FOR UPDATE
// (b24oauth.ErrNotInstalled when there is none), then the statement f returns, and commits.
// The statement runs and commits even if ctx ended while f ran (within a 10s bound of its own).
// f's error is returned unchanged and ends the transaction; any other error is prefixed with op.
func (s *Store) withLockedRow(ctx context.Context, op, memberID string, f func(cur b24oauth.Installation) (sql string, args []any, err error)) error {
	var fErr error
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := s.lockRow(ctx, tx, memberID)
		if err != nil {
			return err
		}
		sql, args, err := f(cur)
		if err != nil {
			fErr = err
			return err
		}
		wctx, cancel := detached(ctx)
		defer cancel()
		_, err = tx.Exec(wctx, sql, args...)
		return err
	})
	switch {
	case err == nil:
		return nil
	case fErr != nil:
		return fErr
	}
	return fmt.Errorf("pgstore: %s %q: %w", op, memberID, err)
}

// lockRow reads the row of memberID FOR UPDATE in tx: b24oauth.ErrNotInstalled when there is
// none.
func (s *Store) lockRow(ctx context.Context, tx pgx.Tx, memberID string) (b24oauth.Installation, error) {
	var data []byte
	err := tx.QueryRow(ctx, s.lockSQL, memberID).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return b24oauth.Installation{}, b24oauth.ErrNotInstalled
	}
	if err != nil {
		return b24oauth.Installation{}, err
	}
	return decode(memberID, data)
}

// Update locks the row of memberID, calls fn with the stored installation and writes what fn
// returns, in one transaction. If fn fails, nothing is written and its error is returned
// unchanged. If there is no row, or memberID is malformed, Update returns an error matching
// b24oauth.ErrNotInstalled without calling fn. fn must not change MemberID (Update fails if it does) and must not use
// the Store itself.
//
// ctx bounds the wait for the lock; once fn has returned, its result is written and committed
// even if ctx has ended meanwhile (within a 10s bound of its own), because fn may have spent a
// single-use refresh token that only its result records.
func (s *Store) Update(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) (b24oauth.Installation, error)) error {
	if !b24oauth.ValidMemberID(memberID) {
		return errMalformed
	}
	return s.withLockedRow(ctx, "update", memberID, func(cur b24oauth.Installation) (string, []any, error) {
		next, err := fn(cur)
		if err != nil {
			return "", nil, err
		}
		if next.MemberID != memberID {
			return "", nil, fmt.Errorf("pgstore: update %q: fn changed MemberID to %q", memberID, next.MemberID)
		}
		args, err := rowArgs(next)
		if err != nil {
			return "", nil, fmt.Errorf("pgstore: update %q: %w", memberID, err)
		}
		// Written even if ctx ended while fn ran: fn may have spent a single-use refresh
		// token, and dropping the pair it returns would lose the portal.
		return s.updateSQL, args, nil
	})
}

// List yields every stored member_id once (b24oauth.Lister), in member_id order. It reads them
// page by page, 1000 a query, each page after the last member_id of the one before (keyset
// pagination over the primary key, so each query is an index range scan, whatever the table's
// size), and holds no connection while the loop body runs. Rows inserted or deleted meanwhile
// are listed if they sort after the page being read, and not otherwise.
func (s *Store) List(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		page := make([]string, 0, s.listPage)
		after := ""
		for {
			if err := ctx.Err(); err != nil {
				yield("", err)
				return
			}
			var err error
			page, err = s.listAfter(ctx, after, page[:0])
			if err != nil {
				yield("", fmt.Errorf("pgstore: list: %w", err))
				return
			}
			for _, id := range page {
				if !b24oauth.ValidMemberID(id) {
					continue // a row no method of the Store reads (written by hand)
				}
				if err := ctx.Err(); err != nil {
					yield("", err)
					return
				}
				if !yield(id, nil) {
					return
				}
			}
			if len(page) < s.listPage {
				return
			}
			after = page[len(page)-1]
		}
	}
}

// listAfter appends to page the member_ids that sort after after, at most s.listPage of them.
func (s *Store) listAfter(ctx context.Context, after string, page []string) ([]string, error) {
	rows, err := s.pool.Query(ctx, s.listSQL, after, s.listPage)
	if err != nil {
		return page, err
	}
	defer rows.Close()
	for rows.Next() {
		// The raw value of a text column is its UTF-8 bytes in either wire format; reading it
		// directly costs one allocation per row where Scan costs three.
		raw := rows.RawValues()
		if len(raw) != 1 || raw[0] == nil {
			return page, fmt.Errorf("unexpected row of %d values", len(raw))
		}
		page = append(page, string(raw[0]))
	}
	return page, rows.Err()
}

// inTx runs f in a transaction. When ctx has a deadline, the transaction's lock_timeout ends
// any row-lock wait a little before it: PostgreSQL then reports the timeout, the transaction
// is rolled back and the connection stays usable, where a context expiring in the middle of a
// query would make pgx close the connection.
func (s *Store) inTx(ctx context.Context, f func(pgx.Tx) error) (err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		// The caller's context may be done already; the rollback must still reach the server
		// for the connection to go back to the pool clean.
		rctx, cancel := detached(ctx)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		lt := lockTimeout(time.Until(deadline))
		if _, err = tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, strconv.FormatInt(lt.Milliseconds(), 10)); err != nil {
			return err
		}
	}
	if err = f(tx); err != nil {
		var pgErr *pgconn.PgError
		if hasDeadline && errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available: our lock_timeout
			err = fmt.Errorf("waiting for the row lock: %w (%w)", context.DeadlineExceeded, err)
		}
		return err
	}
	// The work is done: finish it even if ctx ends now, rather than leave its fate unknown.
	cctx, cancel := detached(ctx)
	defer cancel()
	return tx.Commit(cctx)
}

// detachedTimeout bounds the statements that must run even after the caller's context ended.
const detachedTimeout = 10 * time.Second

// detached returns a context that keeps ctx's values but not its cancellation, bounded by
// detachedTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
}

// lockTimeout leaves a margin before the context's deadline, so that PostgreSQL gives up the
// lock wait before pgx reacts to the deadline by closing the connection.
func lockTimeout(remaining time.Duration) time.Duration {
	margin := min(remaining/5, 250*time.Millisecond)
	return max(remaining-margin, time.Millisecond)
}

func decode(memberID string, data []byte) (b24oauth.Installation, error) {
	var inst b24oauth.Installation
	if err := json.Unmarshal(data, &inst); err != nil {
		return b24oauth.Installation{}, fmt.Errorf("pgstore: corrupt record of %q: %w", memberID, err)
	}
	return inst, nil
}

func rowArgs(inst b24oauth.Installation) ([]any, error) {
	data, err := json.Marshal(inst)
	if err != nil {
		return nil, err
	}
	var updated any
	if !inst.UpdatedAt.IsZero() {
		updated = inst.UpdatedAt
	}
	return []any{inst.MemberID, inst.Domain, string(inst.State), inst.Expires, updated, data}, nil
}
