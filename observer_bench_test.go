package b24oauth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
)

// BenchmarkCallObserver is Call over loopback with no Observer and with one that does nothing:
// the difference is what reporting costs the SDK itself (an Observer's own work aside). With
// no Observer, a call must allocate as much as before the Observer existed.
func BenchmarkCallObserver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(profileReply)
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, bc := range []struct {
		name string
		obs  b24oauth.Observer
	}{{"nil", nil}, {"nop", b24oauth.NopObserver{}}} {
		b.Run(bc.name, func(b *testing.B) {
			p := testParams()
			p.Domain, p.ClientEndpoint = strings.TrimPrefix(srv.URL, "http://"), srv.URL+"/rest/"
			c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(hc), b24oauth.WithInsecureHTTP(), unlimited(),
				b24oauth.WithObserver(bc.obs))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			defer reportCPU(b)()
			for i := 0; i < b.N; i++ {
				if _, err := c.Call(ctx, "profile", nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
