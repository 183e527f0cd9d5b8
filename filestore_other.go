//go:build !unix

package b24oauth

import "io/fs"

// checkDirMode accepts any directory: outside Unix, permission bits do not tell who may read
// it (on Windows, restrict it with an ACL).
func checkDirMode(string, fs.FileInfo) error { return nil }

// syncDir is a no-op: outside Unix a directory cannot be opened for syncing; the record's own
// fsync and the rename still keep it whole.
func syncDir(string) error { return nil }
