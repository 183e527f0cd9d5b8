package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/redis/go-redis/v9"
)

// Defaults of the options.
const (
	// DefaultKeyPrefix starts every key of a Store unless WithKeyPrefix says otherwise.
	DefaultKeyPrefix = "b24oauth:"

	// DefaultLockLease is how long a member's lock outlives its holder when the holder stops
	// renewing it (it crashed, or lost Redis). Live holders renew it every third of it while
	// they work, so it need not cover a token refresh. It is a third of the client's default
	// refresh timeout (30 s, b24oauth.WithRefreshTimeout), which bounds a refresh's waits for
	// this lock as well: a refresh queued behind a holder that was killed gets the lock at most
	// a lease after the holder's last renewal, and still has most of its time for its own
	// exchange. A lease as long as the refresh timeout would turn a killed holder into failed
	// calls ("waiting for the lock: context deadline exceeded") instead of a delay.
	DefaultLockLease = 10 * time.Second

	// DefaultLockPollMin is the first pause between two attempts to take a lock someone else
	// holds; each next pause doubles.
	DefaultLockPollMin = 2 * time.Millisecond

	// DefaultLockPollMax is the longest pause between two attempts to take a lock.
	DefaultLockPollMax = 100 * time.Millisecond
)

// ErrLockLost is returned by Update and Save when, at the moment of writing, the member's lock
// was no longer theirs or the record had been changed by someone else since it was read: the
// lease ran out while renewals could not reach Redis, or the lock key was lost. Nothing was
// written. Match it with errors.Is.
var ErrLockLost = errors.New("redisstore: lock lost before the write; nothing was written")

// Store is a b24oauth.TokenStore kept in Redis. It is safe for concurrent use, and any number
// of Stores with the same key prefix, in any number of processes, may share one Redis.
type Store struct {
	client           redis.UniversalClient
	prefix           string
	lease            time.Duration
	pollMin, pollMax time.Duration
	local            localLocks // this process's turn at a member's Redis lock
	listCount        int64      // the COUNT of List's SCANs

	// Test hooks (export_test.go); nil in production.
	hookLockBusy     func(memberID string) // acquire found the lock held, before its first pause
	hookDeleteLocked func(memberID string) // Delete holds the lock, before it deletes
}

var (
	_ b24oauth.TokenStore         = (*Store)(nil)
	_ b24oauth.Lister             = (*Store)(nil)
	_ b24oauth.Creator            = (*Store)(nil)
	_ b24oauth.ConditionalDeleter = (*Store)(nil)
)

// listScanCount is the COUNT hint of List's SCANs: about how many keys one SCAN call examines.
const listScanCount = 1000

// errMalformed is what Load and Update return for a member_id that b24oauth.ValidMemberID
// refuses; the id itself, which came from outside, is not quoted.
var errMalformed = fmt.Errorf("redisstore: malformed member_id: %w", b24oauth.ErrNotInstalled)

// Option configures New.
type Option func(*Store) error

// WithKeyPrefix sets the string every key of the Store starts with (DefaultKeyPrefix by
// default). Stores with different prefixes never see each other's data. The prefix must not
// contain '{' or '}', which would change the keys' Redis Cluster hash tag.
func WithKeyPrefix(prefix string) Option {
	return func(s *Store) error {
		if strings.ContainsAny(prefix, "{}") {
			return fmt.Errorf("redisstore: key prefix %q must not contain '{' or '}'", prefix)
		}
		s.prefix = prefix
		return nil
	}
}

// WithLockLease sets how long a member's lock lasts without renewal (DefaultLockLease by
// default; at least 10ms). A holder renews it every third of the lease while the function
// given to Update runs, so the lease is the time the others wait after a holder died holding
// it. Make it comfortably longer than a pause of your process (a GC stall, a VM migration)
// and than a round trip to Redis under load, and well below the clients' refresh timeout
// (b24oauth.WithRefreshTimeout, 30 s by default), which bounds a refresh's wait for the lock
// too: a refresh waiting behind a dead holder for longer than that fails instead of going on.
func WithLockLease(d time.Duration) Option {
	return func(s *Store) error {
		if d < 10*time.Millisecond {
			return fmt.Errorf("redisstore: lock lease %v is shorter than 10ms", d)
		}
		s.lease = d
		return nil
	}
}

// WithLockPolling sets the pauses between two attempts to take a lock held by someone else:
// the first pause is about initial, each next one doubles, up to max, with random jitter
// (DefaultLockPollMin and DefaultLockPollMax by default).
func WithLockPolling(initial, max time.Duration) Option {
	return func(s *Store) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("redisstore: invalid lock polling %v..%v: need 0 < initial <= max", initial, max)
		}
		s.pollMin, s.pollMax = initial, max
		return nil
	}
}

// New returns a Store that keeps installations in the Redis client talks to. It does not
// contact Redis; the client stays the caller's, to close.
func New(client redis.UniversalClient, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	s := &Store{
		client:  client,
		prefix:  DefaultKeyPrefix,
		lease:   DefaultLockLease,
		pollMin: DefaultLockPollMin,
		pollMax: DefaultLockPollMax,

		listCount: listScanCount,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// InstallationKey returns the key of the hash that holds the installation of memberID.
func (s *Store) InstallationKey(memberID string) string {
	return s.prefix + "inst:{" + memberID + "}"
}

// LockKey returns the key of the lock of memberID.
func (s *Store) LockKey(memberID string) string {
	return s.prefix + "lock:{" + memberID + "}"
}

// Load returns the installation of memberID, or an error matching b24oauth.ErrNotInstalled
// when there is none or memberID is malformed (b24oauth.ValidMemberID; Redis is not asked then).
func (s *Store) Load(ctx context.Context, memberID string) (b24oauth.Installation, error) {
	if !b24oauth.ValidMemberID(memberID) {
		return b24oauth.Installation{}, errMalformed
	}
	data, err := s.client.HGet(ctx, s.InstallationKey(memberID), "data").Bytes()
	if errors.Is(err, redis.Nil) {
		return b24oauth.Installation{}, fmt.Errorf("redisstore: load %q: %w", memberID, b24oauth.ErrNotInstalled)
	}
	if err != nil {
		return b24oauth.Installation{}, fmt.Errorf("redisstore: load %q: %w", memberID, err)
	}
	return decode(memberID, data)
}

// Save inserts inst, or replaces the stored installation of inst.MemberID, which must be well
// formed (b24oauth.ValidMemberID). It takes the member's lock, so it waits for an Update in
// progress to finish.
func (s *Store) Save(ctx context.Context, inst b24oauth.Installation) error {
	return s.put(ctx, "save", writeAny, inst)
}

// Create stores inst if its member_id (which must be well formed) has no installation, and
// otherwise returns an error matching b24oauth.ErrAlreadyInstalled, writing nothing
// (b24oauth.Creator). It takes the member's lock, like Save, and the write script checks that
// the record is absent and the lock still Create's in one step.
func (s *Store) Create(ctx context.Context, inst b24oauth.Installation) error {
	return s.put(ctx, "create", writeAbsent, inst)
}

// put writes inst under the member's lock, in the write mode of Save or Create.
func (s *Store) put(ctx context.Context, op, mode string, inst b24oauth.Installation) error {
	if !b24oauth.ValidMemberID(inst.MemberID) {
		return errors.New("redisstore: " + op + ": malformed member_id (want 32 lowercase hex digits); nothing was written")
	}
	data, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("redisstore: %s %q: %w", op, inst.MemberID, err)
	}
	token, unlock, err := s.lock(ctx, inst.MemberID)
	if err != nil {
		return fmt.Errorf("redisstore: %s %q: %w", op, inst.MemberID, err)
	}
	defer unlock()
	if err := s.write(ctx, inst.MemberID, token, mode, "", data); err != nil {
		return fmt.Errorf("redisstore: %s %q: %w", op, inst.MemberID, err)
	}
	return nil
}

// Delete removes the installation of memberID. It returns nil when there is none, or when
// memberID is malformed. It takes the member's lock, like Save and Update: an Update in
// progress finishes first (Delete waits for it, and then removes what it wrote), and nothing
// is removed unless the lock is still Delete's at that moment, so a record written by the next
// holder of the lock is never removed (ErrLockLost then).
func (s *Store) Delete(ctx context.Context, memberID string) error {
	if !b24oauth.ValidMemberID(memberID) {
		return nil // nothing can be stored under it
	}
	token, unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return fmt.Errorf("redisstore: delete %q: %w", memberID, err)
	}
	defer unlock()
	if s.hookDeleteLocked != nil {
		s.hookDeleteLocked(memberID)
	}
	if err := s.remove(ctx, memberID, token, false, ""); err != nil {
		return fmt.Errorf("redisstore: delete %q: %w", memberID, err)
	}
	return nil
}

// DeleteIf takes the lock of memberID, calls fn with the stored installation and deletes it if
// fn returns nil, provided the lock is still held and nobody else wrote the record meanwhile
// (ErrLockLost otherwise, and nothing is deleted) (b24oauth.ConditionalDeleter). If fn fails,
// nothing is deleted and its error is returned unchanged. If there is no installation, or
// memberID is malformed, DeleteIf returns an error matching b24oauth.ErrNotInstalled without
// calling fn. ctx bounds the wait for the lock; once fn has returned nil, the delete runs even
// if ctx has ended (within a 10s bound of its own).
func (s *Store) DeleteIf(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) error) error {
	if !b24oauth.ValidMemberID(memberID) {
		return errMalformed
	}
	token, unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return fmt.Errorf("redisstore: delete %q: %w", memberID, err)
	}
	defer unlock()
	stop := s.keepAlive(context.WithoutCancel(ctx), memberID, token)
	defer stop()
	cur, rev, err := s.read(ctx, memberID)
	if err != nil {
		return fmt.Errorf("redisstore: delete %q: %w", memberID, err)
	}
	if s.hookDeleteLocked != nil {
		s.hookDeleteLocked(memberID)
	}
	if err := fn(cur); err != nil {
		return err
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	if err := s.remove(wctx, memberID, token, true, rev); err != nil {
		return fmt.Errorf("redisstore: delete %q: %w", memberID, err)
	}
	return nil
}

// read returns the stored installation of memberID and its revision, or an error matching
// b24oauth.ErrNotInstalled.
func (s *Store) read(ctx context.Context, memberID string) (b24oauth.Installation, string, error) {
	vals, err := s.client.HMGet(ctx, s.InstallationKey(memberID), "data", "rev").Result()
	if err != nil {
		return b24oauth.Installation{}, "", err
	}
	data, ok := vals[0].(string)
	if !ok {
		return b24oauth.Installation{}, "", b24oauth.ErrNotInstalled
	}
	rev, _ := vals[1].(string)
	cur, err := decode(memberID, []byte(data))
	return cur, rev, err
}

// remove deletes the record of memberID for the holder of its lock; with checkRev, only if its
// revision is still rev.
func (s *Store) remove(ctx context.Context, memberID, token string, checkRev bool, rev string) error {
	check := "0"
	if checkRev {
		check = "1"
	}
	keys := []string{s.InstallationKey(memberID), s.LockKey(memberID)}
	res, err := deleteScript.Run(ctx, s.client, keys, token, check, rev).Text()
	if err != nil {
		return err
	}
	switch res {
	case "ok":
		return nil
	case "changed":
		return fmt.Errorf("%w (the record was written by another holder)", ErrLockLost)
	default:
		return ErrLockLost
	}
}

// Update takes the lock of memberID, calls fn with the stored installation and writes what fn
// returns, provided the lock is still held and nobody else wrote the record meanwhile
// (ErrLockLost otherwise). If fn fails, nothing is written and its error is returned
// unchanged. If there is no installation, Update returns an error matching
// b24oauth.ErrNotInstalled without calling fn. fn must not change MemberID (Update fails if it
// does).
//
// ctx bounds the wait for the lock; once fn has returned, its result is written even if ctx
// has ended meanwhile (within a 10s bound of its own), because fn may have spent a single-use
// refresh token that only its result records.
func (s *Store) Update(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) (b24oauth.Installation, error)) error {
	if !b24oauth.ValidMemberID(memberID) {
		return errMalformed
	}
	token, unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return fmt.Errorf("redisstore: update %q: %w", memberID, err)
	}
	defer unlock()
	// Renewals go on if ctx ends while fn runs: fn's result is still to be written.
	stop := s.keepAlive(context.WithoutCancel(ctx), memberID, token)
	defer stop()

	cur, rev, err := s.read(ctx, memberID)
	if err != nil {
		return fmt.Errorf("redisstore: update %q: %w", memberID, err)
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	if next.MemberID != memberID {
		return fmt.Errorf("redisstore: update %q: fn changed MemberID to %q", memberID, next.MemberID)
	}
	out, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("redisstore: update %q: %w", memberID, err)
	}
	// Written even if ctx ended while fn ran: fn may have spent a single-use refresh token,
	// and dropping the pair it returns would lose the portal.
	wctx, cancel := detached(ctx)
	defer cancel()
	if err := s.write(wctx, memberID, token, writeRev, rev, out); err != nil {
		return fmt.Errorf("redisstore: update %q: %w", memberID, err)
	}
	return nil
}

// List yields every stored member_id once (b24oauth.Lister), in no particular order. It walks
// the keyspace with SCAN (MATCH on the Store's own record keys, COUNT 1000; never KEYS, so
// Redis is never blocked for long), on every master of a Redis Cluster and every shard of a
// Ring, and drops the keys SCAN returns more than once (it may, while Redis resizes its tables),
// remembering 16 bytes per member listed. It holds no connection while the loop body runs. A
// record that exists throughout the walk is listed; one saved or deleted meanwhile may or may
// not be.
func (s *Store) List(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		fail := func(err error) { yield("", fmt.Errorf("redisstore: list: %w", err)) }
		if err := ctx.Err(); err != nil {
			fail(err)
			return
		}
		nodes, err := s.scanNodes(ctx)
		if err != nil {
			fail(err)
			return
		}
		pattern := globEscape(s.prefix) + "inst:{*}"
		head := s.prefix + "inst:{"
		seen := make(map[[16]byte]struct{})
		for _, node := range nodes {
			for cursor := uint64(0); ; {
				if err := ctx.Err(); err != nil {
					fail(err)
					return
				}
				keys, next, err := node.Scan(ctx, cursor, pattern, s.listCount).Result()
				if err != nil {
					fail(err)
					return
				}
				for _, key := range keys {
					id, ok := strings.CutPrefix(key, head)
					if ok {
						id, ok = strings.CutSuffix(id, "}")
					}
					if !ok || !b24oauth.ValidMemberID(id) {
						continue // a key of another Store whose prefix extends ours
					}
					bin := memberBytes(id)
					if _, dup := seen[bin]; dup {
						continue
					}
					seen[bin] = struct{}{}
					if err := ctx.Err(); err != nil {
						fail(err)
						return
					}
					if !yield(id, nil) {
						return
					}
				}
				if next == 0 {
					break
				}
				cursor = next
			}
		}
	}
}

// scanner is what List needs of a Redis node.
type scanner interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
}

// scanNodes returns the nodes whose keyspaces together hold every key: the masters of a
// cluster, the shards of a ring, or the one server of any other client.
func (s *Store) scanNodes(ctx context.Context) ([]scanner, error) {
	var (
		mu    sync.Mutex
		nodes []scanner
	)
	add := func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		nodes = append(nodes, c)
		return nil
	}
	var err error
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, add)
	case *redis.Ring:
		err = c.ForEachShard(ctx, add)
	default:
		nodes = []scanner{s.client}
	}
	return nodes, err
}

// globEscape quotes the characters that SCAN's MATCH pattern gives a meaning to.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// memberBytes packs a well-formed member_id into the 16 bytes its hex digits stand for.
func memberBytes(id string) (b [16]byte) {
	for i := range b {
		b[i] = unhex(id[2*i])<<4 | unhex(id[2*i+1])
	}
	return b
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

// detachedTimeout bounds the calls that must run even after the caller's context ended.
const detachedTimeout = 10 * time.Second

// detached returns a context that keeps ctx's values but not its cancellation, bounded by
// detachedTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
}

// writeScript stores a record for the holder of the lock. KEYS: inst, lock. ARGV: token, the
// write mode (writeAny, writeRev: the record must exist with revision ARGV[3], writeAbsent: it
// must not exist), expected revision, data, new revision.
var writeScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'lost' end
if ARGV[2] == '1' then
	if redis.call('HEXISTS', KEYS[1], 'data') == 0 then return 'gone' end
	if (redis.call('HGET', KEYS[1], 'rev') or '') ~= ARGV[3] then return 'changed' end
elseif ARGV[2] == '2' then
	if redis.call('HEXISTS', KEYS[1], 'data') == 1 then return 'exists' end
end
redis.call('HSET', KEYS[1], 'data', ARGV[4], 'rev', ARGV[5])
return 'ok'
`)

// Write modes of writeScript.
const (
	writeAny    = "0" // Save: insert or replace
	writeRev    = "1" // Update: replace the revision read
	writeAbsent = "2" // Create: insert only
)

// deleteScript removes a record for the holder of the lock. KEYS: inst, lock. ARGV: token, "1"
// to require the record's revision to be ARGV[3] (else "0"), expected revision.
var deleteScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'lost' end
if ARGV[2] == '1' and (redis.call('HGET', KEYS[1], 'rev') or '') ~= ARGV[3] then return 'changed' end
redis.call('DEL', KEYS[1])
return 'ok'
`)

// releaseScript deletes a lock only for its owner. KEYS: lock. ARGV: token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// renewScript extends a lock's lease only for its owner. KEYS: lock. ARGV: token, lease in ms.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

func (s *Store) write(ctx context.Context, memberID, token, mode, rev string, data []byte) error {
	keys := []string{s.InstallationKey(memberID), s.LockKey(memberID)}
	res, err := writeScript.Run(ctx, s.client, keys, token, mode, rev, data, randomToken()).Text()
	if err != nil {
		return err
	}
	switch res {
	case "ok":
		return nil
	case "lost":
		return ErrLockLost
	case "changed":
		return fmt.Errorf("%w (the record was written by another holder)", ErrLockLost)
	case "gone":
		return fmt.Errorf("deleted while updating: %w", b24oauth.ErrNotInstalled)
	case "exists":
		return b24oauth.ErrAlreadyInstalled
	default:
		return fmt.Errorf("unexpected reply %q from the write script", res)
	}
}

// lock takes memberID's turn in this process (see localLocks), then its Redis lock, and returns
// the owner token. unlock gives both back and must be called exactly once.
func (s *Store) lock(ctx context.Context, memberID string) (token string, unlock func(), err error) {
	unlockLocal, err := s.local.lock(ctx, memberID)
	if err != nil {
		return "", nil, err
	}
	token, err = s.acquire(ctx, memberID)
	if err != nil {
		unlockLocal()
		return "", nil, err
	}
	return token, func() {
		s.release(ctx, memberID, token)
		unlockLocal()
	}, nil
}

// acquire takes the lock of memberID, waiting for it until ctx is done, and returns the
// owner token.
func (s *Store) acquire(ctx context.Context, memberID string) (string, error) {
	key := s.LockKey(memberID)
	token := randomToken()
	pause := s.pollMin
	for busy := false; ; busy = true {
		ok, err := s.client.SetNX(ctx, key, token, s.lease).Result()
		if err != nil {
			// The SET may have reached Redis before the failure was seen (a context ending
			// mid-call): remove the lock if it is ours, rather than leave it to its lease.
			s.release(ctx, memberID, token)
			return "", fmt.Errorf("taking the lock: %w", err)
		}
		if ok {
			return token, nil
		}
		if !busy && s.hookLockBusy != nil {
			s.hookLockBusy(memberID)
		}
		// Jitter keeps waiters that started together from polling in step.
		t := time.NewTimer(pause/2 + mrand.N(pause/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("waiting for the lock: %w", ctx.Err())
		case <-t.C:
		}
		pause = min(pause*2, s.pollMax)
	}
}

// release gives the lock back if it is still ours. It runs even when ctx has ended: a lock
// left behind would block the member's other writers for a whole lease.
func (s *Store) release(ctx context.Context, memberID, token string) {
	rctx, cancel := detached(ctx)
	defer cancel()
	_ = releaseScript.Run(rctx, s.client, []string{s.LockKey(memberID)}, token).Err()
}

// keepAlive renews the lease of a held lock every third of the lease until the returned stop
// is called. A renewal that finds the lock gone ends the renewals; the write then reports
// ErrLockLost.
func (s *Store) keepAlive(ctx context.Context, memberID, token string) (stop func()) {
	stopc := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.lease / 3)
		defer t.Stop()
		keys := []string{s.LockKey(memberID)}
		for {
			select {
			case <-stopc:
				return
			case <-t.C:
				n, err := renewScript.Run(ctx, s.client, keys, token, s.lease.Milliseconds()).Int()
				if err == nil && n == 0 {
					return
				}
			}
		}
	}()
	return func() {
		close(stopc)
		<-done
	}
}

func decode(memberID string, data []byte) (b24oauth.Installation, error) {
	var inst b24oauth.Installation
	if err := json.Unmarshal(data, &inst); err != nil {
		return b24oauth.Installation{}, fmt.Errorf("redisstore: corrupt record of %q: %w", memberID, err)
	}
	return inst, nil
}

func randomToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("redisstore: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
