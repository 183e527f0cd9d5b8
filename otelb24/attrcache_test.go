package otelb24

import (
	"fmt"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// setOf returns the attribute set the options of a cache entry record with.
func setOf(o measureOpts) attribute.Set {
	return metric.NewAddConfig(o.add).Attributes()
}

func TestAttrCache(t *testing.T) {
	builds := 0
	var c attrCache[string]
	c.build = func(k string) attribute.Set {
		builds++
		return attribute.NewSet(attribute.String("k", k))
	}
	for i := 0; i < 3; i++ {
		if got := setOf(c.get("a")); got.Len() != 1 || got.ToSlice()[0].Value.AsString() != "a" {
			t.Fatalf("get(a) = %v", got.ToSlice())
		}
	}
	if builds != 1 {
		t.Errorf("built %d times for one key, want 1", builds)
	}
	// Past maxCached the sets are still right, only no longer kept.
	for i := 0; i < maxCached+10; i++ {
		k := fmt.Sprint("m", i)
		if got := setOf(c.get(k)); got.Len() != 1 || got.ToSlice()[0].Value.AsString() != k {
			t.Fatalf("get(%s) = %v", k, got.ToSlice())
		}
	}
	if n := len(*c.m.Load()); n != maxCached {
		t.Errorf("%d entries cached, want the bound %d", n, maxCached)
	}
	builds = 0
	c.get("m5")
	c.get(fmt.Sprint("m", maxCached+5))
	c.get(fmt.Sprint("m", maxCached+5))
	if builds != 2 {
		t.Errorf("%d builds for a cached key and an uncached one twice, want 2", builds)
	}
}

func TestAttrCacheConcurrent(t *testing.T) {
	var c attrCache[int]
	c.build = func(k int) attribute.Set { return attribute.NewSet(attribute.Int("k", k)) }
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				k := i % 50
				set := setOf(c.get(k))
				if v := set.ToSlice()[0].Value.AsInt64(); v != int64(k) {
					t.Errorf("get(%d) = %d", k, v)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(*c.m.Load()); n != 50 {
		t.Errorf("%d entries, want 50", n)
	}
}
