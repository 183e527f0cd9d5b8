package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/b24go/b24oauth"
)

// The authorization-code flow: a portal's user connects the service.
//
//	GET /connect?domain=acme.bitrix24.com  redirects the browser to the portal's authorize URL
//	GET /oauth/callback?code=...&state=... where the portal sends the browser back (set this URL
//	                                       as the redirect URI in the application's settings)
//
// The state makes sure a callback finishes a flow this service started, for the portal it was
// started for, once: it is signed (HMAC-SHA256), expires after stateTTL, names the domain, and
// is taken at most once. The key comes from B24_STATE_KEY (base64, 32 bytes or more) or is
// random per process; the set of states taken lives in this process's memory. A fleet of
// replicas behind a load balancer shares the key (every replica must check what another
// issued) and keeps the taken states where every replica sees them (for example Redis SET NX
// with the state's expiry), or a state could be replayed against another replica. A service
// with user accounts also binds the state to the user's session (a cookie), so that a callback
// URL sent to someone else's browser finishes nothing.

// stateTTL bounds the time from /connect to the callback: the user may have to log in to the
// portal first. The portal's code itself lives 30 seconds.
const stateTTL = 10 * time.Minute

// maxTakenStates bounds the memory the taken states use; past it (after dropping the expired
// ones) callbacks are refused until states expire.
const maxTakenStates = 100_000

// Reasons a state is refused.
var (
	errStateInvalid = errors.New("invalid state")
	errStateExpired = errors.New("expired state")
	errStateUsed    = errors.New("state already used")
	errStateBusy    = errors.New("too many states in use; retry later")
)

// states issues and takes the states of the authorization-code flow. Safe for concurrent use.
type states struct {
	key []byte
	now func() time.Time

	mu    sync.Mutex
	taken map[string]time.Time // nonce → expiry, for states already taken
}

// newStates returns states signed with key; nil or empty: a random key of this process.
func newStates(key []byte) (*states, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	} else if len(key) < 32 {
		return nil, errors.New("the state key must have 32 bytes or more")
	}
	return &states{key: key, now: time.Now, taken: make(map[string]time.Time)}, nil
}

// statesFromEnv reads B24_STATE_KEY (base64); unset: a random key of this process.
func statesFromEnv(v string) (*states, error) {
	if v == "" {
		return newStates(nil)
	}
	key, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("B24_STATE_KEY: %w", err)
	}
	return newStates(key)
}

// issue returns a new state for the portal at domain: base64url(nonce.expiry.domain) "."
// base64url(HMAC-SHA256 of the payload).
func (s *states) issue(domain string) (string, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	payload := hex.EncodeToString(nonce) + "." + strconv.FormatInt(s.now().Add(stateTTL).Unix(), 10) + "." + domain
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), nil
}

func (s *states) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// take checks that state was issued here for domain and has not expired, and marks it taken:
// a state is good once.
func (s *states) take(state, domain string) error {
	if len(state) > 1024 {
		return errStateInvalid
	}
	enc, sig, ok := strings.Cut(state, ".")
	if !ok {
		return errStateInvalid
	}
	raw, err1 := base64.RawURLEncoding.DecodeString(enc)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(string(raw))) {
		return errStateInvalid
	}
	fields := strings.SplitN(string(raw), ".", 3)
	if len(fields) != 3 {
		return errStateInvalid
	}
	nonce, forDomain := fields[0], fields[2]
	exp, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return errStateInvalid
	}
	if forDomain != domain {
		return errStateInvalid
	}
	now := s.now()
	expires := time.Unix(exp, 0)
	if !now.Before(expires) {
		return errStateExpired
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, used := s.taken[nonce]; used {
		return errStateUsed
	}
	if len(s.taken) >= maxTakenStates {
		for n, e := range s.taken {
			if !now.Before(e) {
				delete(s.taken, n)
			}
		}
		if len(s.taken) >= maxTakenStates {
			return errStateBusy
		}
	}
	s.taken[nonce] = expires
	return nil
}

// connectStart sends the browser to the portal's authorize URL with a new state.
func connectStart(app *b24oauth.App, st *states, w http.ResponseWriter, r *http.Request) {
	domain := strings.ToLower(r.URL.Query().Get("domain"))
	cfg, err := app.OAuth2Config(domain)
	if err != nil {
		http.Error(w, "domain must be a portal host name, such as acme.bitrix24.com", http.StatusBadRequest)
		return
	}
	state, err := st.issue(domain)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, cfg.AuthCodeURL(state), http.StatusFound)
}

// connectCallback finishes the flow: the state first (a forged, replayed or expired callback
// reaches neither the OAuth server nor the store), then Connect, at once (the code lives 30 s).
func connectCallback(app *b24oauth.App, st *states, w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	domain := strings.ToLower(q.Get("domain"))
	if err := st.take(q.Get("state"), domain); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errStateBusy) {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error()+": start again at /connect", status)
		return
	}
	inst, err := app.Connect(r.Context(), domain, q.Get("code"))
	var ce *b24oauth.ConnectError
	switch {
	case errors.Is(err, b24oauth.ErrInstallationInUse):
		http.Error(w, "the application is installed on this portal already", http.StatusConflict)
		return
	case errors.As(err, &ce) && ce.Code != "":
		http.Error(w, "the portal did not confirm the connection: start again at /connect", http.StatusBadRequest)
		return
	case err != nil:
		http.Error(w, "cannot connect the portal now: try again later", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "connected %s (member_id %s)\n", inst.Domain, inst.MemberID)
}
