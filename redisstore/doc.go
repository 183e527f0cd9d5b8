// Package redisstore is a [b24oauth.TokenStore] kept in Redis, through go-redis v9, for
// applications that run several replicas against one Redis (a single node, a Sentinel-managed
// primary or a Redis Cluster: anything a redis.UniversalClient speaks to).
//
// Usage:
//
//	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
//	store, err := redisstore.New(client, redisstore.WithKeyPrefix("myapp:b24:"))
//	if err != nil {
//		return err
//	}
//	app, err := b24oauth.NewApp(b24oauth.AppConfig{
//		ClientID:     clientID,
//		ClientSecret: clientSecret,
//		Store:        store,
//	})
//
// # Keys
//
// With the prefix P (DefaultKeyPrefix unless WithKeyPrefix says otherwise), the installation of
// member M is the hash
//
//	P inst:{M}   fields: data (the Installation's JSON), rev (an opaque revision, new at every write)
//
// and its lock, while someone holds it, is the string
//
//	P lock:{M}   value: the holder's random token; expires after the lease
//
// (without the spaces). The braces are Redis Cluster hash tags: both keys of a member live in
// one slot, so the scripts below touch them together on a cluster too. Only well-formed
// member_ids (b24oauth.ValidMemberID) make keys: any other is answered without a command, so
// no member_id can add a hash tag or a glob pattern. The Store never uses KEYS; List walks the
// record keys with SCAN. Keys never expire except locks.
//
// # Locking
//
// Update, Save, Create, Delete and DeleteIf take the member's lock with SET NX PX and a random
// token, polling with a jittered exponential backoff (WithLockPolling) until they get it or
// their context is done. While the caller's function runs, a background renewal extends the
// lease every third of it, so a slow refresh keeps its lock; the lease (WithLockLease,
// DefaultLockLease) only bounds how long the others wait after a holder died without releasing
// it: 10 s by default, a third of the clients' default refresh timeout, so that with all
// defaults a killed holder costs the other replicas a delay, never a failed call. The write is a
// Lua script that checks, atomically, that the lock is still ours and that the record's
// revision is the one we read: a holder that lost its lock (a process paused for longer than the
// lease, a lock key evicted or lost in a failover) never overwrites what a newer holder wrote,
// and gets ErrLockLost instead. The lock is released with a compare-and-delete script, so only
// its owner removes it.
//
// Create checks in the same script that the record is absent (b24oauth.ErrAlreadyInstalled
// otherwise), and DeleteIf removes the record only if its revision is still the one its
// function was shown, so neither can outrun or undo a write of another holder.
//
// So Delete waits for an Update in progress (a refresh in flight writes its new pair, and
// then the uninstall removes it), and removes the record only while the lock is still its own
// (the same check as a write), so it never removes what a later holder wrote. A record removed
// behind the Store's back while an Update's function runs is not brought back: that Update
// writes nothing and returns an error matching b24oauth.ErrNotInstalled.
//
// # Rate limit across replicas
//
// NewLimiter is a [b24oauth.RateLimiter] on the same Redis: set it as AppConfig.RateLimiter and
// every replica takes a portal's request budget from one bucket, the string
//
//	P rate:{M}   value: the bucket's theoretical arrival time (µs on Redis's clock); expires once the bucket is full
//
// kept by one Lua script (GCRA) that reserves each caller's slot. While Redis cannot be reached,
// the App paces each portal in its own process (b24oauth.App.RateLimiterFallbacks counts those
// requests).
package redisstore
