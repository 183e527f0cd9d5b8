package otelb24

import (
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// maxCached bounds each attrCache: past it, a new combination's attribute set is built for
// each measurement instead of kept (the values come from the SDK's small fixed sets and the
// caller's method names, so this is only reached by a caller naming methods without bound).
const maxCached = 1024

// measureOpts are the options of a measurement with one attribute set, built once.
type measureOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// attrCache maps a key to the measurement options of its attribute set. Reads take no lock and
// allocate nothing: the map is copied on each insertion (rare: once per combination) and
// published through an atomic pointer.
type attrCache[K comparable] struct {
	build func(K) attribute.Set

	m  atomic.Pointer[map[K]measureOpts]
	mu sync.Mutex // serializes insertions
}

func (c *attrCache[K]) get(k K) measureOpts {
	if m := c.m.Load(); m != nil {
		if o, ok := (*m)[k]; ok {
			return o
		}
	}
	set := metric.WithAttributeSet(c.build(k))
	o := measureOpts{add: []metric.AddOption{set}, record: []metric.RecordOption{set}}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	var n int
	if old != nil {
		if cached, ok := (*old)[k]; ok {
			return cached
		}
		n = len(*old)
	}
	if n >= maxCached {
		return o
	}
	next := make(map[K]measureOpts, n+1)
	if old != nil {
		for key, v := range *old {
			next[key] = v
		}
	}
	next[k] = o
	c.m.Store(&next)
	return o
}
