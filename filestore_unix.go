//go:build unix

package b24oauth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// checkDirMode makes sure that dir's group and other users cannot access it. A looser
// directory is tightened to 0700 when that cannot take anything away from anyone: it is empty
// (a fresh volume, t.TempDir()), owned by this process's user and not sticky (a shared
// directory such as /tmp). Otherwise it is an error: changing the mode of a directory in use
// could break whoever else uses it.
func checkDirMode(dir string, fi fs.FileInfo) error {
	mode := fi.Mode()
	if mode.Perm()&0o077 == 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) == os.Geteuid() && mode&fs.ModeSticky == 0 {
		empty, err := isEmptyDir(dir)
		if err != nil {
			return fmt.Errorf("b24oauth: NewFileStore: %w", err)
		}
		if empty {
			if err := os.Chmod(dir, 0o700); err != nil {
				return fmt.Errorf("b24oauth: NewFileStore: %w", err)
			}
			return nil
		}
	}
	return fmt.Errorf("b24oauth: NewFileStore: directory %s has mode %#o; it holds refresh tokens, so it must be accessible to its owner only (chmod 700 it)", dir, mode.Perm())
}

func isEmptyDir(dir string) (bool, error) {
	d, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	_, err = d.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
