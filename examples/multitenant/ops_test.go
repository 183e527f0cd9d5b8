package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// failingStore fails every Load with err, or, when err is nil, blocks each Load until its
// context ends.
type failingStore struct {
	b24oauth.TokenStore
	err error
}

func (s failingStore) Load(ctx context.Context, _ string) (b24oauth.Installation, error) {
	if s.err != nil {
		return b24oauth.Installation{}, s.err
	}
	<-ctx.Done()
	return b24oauth.Installation{}, ctx.Err()
}

func TestHealthz(t *testing.T) {
	old := healthTimeout
	healthTimeout = 50 * time.Millisecond
	t.Cleanup(func() { healthTimeout = old })
	files, err := b24oauth.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		store  b24oauth.TokenStore
		status int
		body   string
	}{
		{"memory store", b24oauth.NewMemoryStore(), http.StatusOK, "ok"},
		{"file store", files, http.StatusOK, "ok"},
		{"store down", failingStore{err: errors.New("connection refused")}, http.StatusServiceUnavailable, "store unavailable"},
		{"store hangs", failingStore{}, http.StatusServiceUnavailable, "store unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mountOps(mux, nil, tc.store)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != tc.status || strings.TrimSpace(rec.Body.String()) != tc.body {
				t.Errorf("GET /healthz: %d %q, want %d %q", rec.Code, rec.Body.String(), tc.status, tc.body)
			}
			rec = httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if rec.Code != http.StatusNotFound {
				t.Errorf("GET /metrics without metrics: %d, want 404", rec.Code)
			}
		})
	}
}
