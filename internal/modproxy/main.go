// Command modproxy prepares the repository's Go modules for release and proves that users can
// fetch them. It knows the modules from go.work: every module listed there whose path has no
// "internal" element is published (tagged and fetched by users); this tool's own module is not.
//
//	modproxy version     [-root DIR]                 print "v" + the root package's Version
//	modproxy set-version [-root DIR] X.Y.Z           write Version and every module's requirement of the repository's modules
//	modproxy modules     [-root DIR]                 print "<module path> <dir>" of every published module
//	modproxy check       [-root DIR] -version vX.Y.Z check the go.mod files for a release at that version
//	modproxy build       [-root DIR] -version vX.Y.Z -out DIR
//	                                                 write a GOPROXY directory serving every published module at that version
//
// `make modcheck` (.ci/modcheck) runs check and build on a clean copy of HEAD, then fetches
// and builds every module through the proxy from a fresh module outside the repository.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "modproxy:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  modproxy version     [-root DIR]
  modproxy set-version [-root DIR] X.Y.Z
  modproxy modules     [-root DIR]
  modproxy check       [-root DIR] -version vX.Y.Z
  modproxy build       [-root DIR] -version vX.Y.Z -out DIR [-time RFC3339]`

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd := args[0]
	fs := flag.NewFlagSet("modproxy "+cmd, flag.ContinueOnError)
	root := fs.String("root", ".", "the repository's root directory (where go.work is)")
	var version, out, stamp *string
	switch cmd {
	case "check", "build":
		version = fs.String("version", "", "the version every published module is checked or served at (vX.Y.Z)")
	}
	if cmd == "build" {
		out = fs.String("out", "", "the proxy directory to write (created if missing)")
		stamp = fs.String("time", "", "the time the .info files give (RFC 3339; default now)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}

	switch cmd {
	case "version":
		if fs.NArg() != 0 {
			return errors.New(usage)
		}
		v, err := readVersion(*root)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, v)
		return nil

	case "set-version":
		if fs.NArg() != 1 {
			return errors.New(usage)
		}
		return setVersion(*root, "v"+strings.TrimPrefix(fs.Arg(0), "v"))

	case "modules":
		if fs.NArg() != 0 {
			return errors.New(usage)
		}
		repo, err := loadRepo(*root)
		if err != nil {
			return err
		}
		for _, m := range repo.published() {
			fmt.Fprintln(stdout, m.Path, m.Dir)
		}
		return nil

	case "check":
		if fs.NArg() != 0 || *version == "" {
			return errors.New(usage)
		}
		repo, err := loadRepo(*root)
		if err != nil {
			return err
		}
		if problems := repo.check(*version); len(problems) > 0 {
			return fmt.Errorf("the modules are not ready for release %s:\n  %s", *version, strings.Join(problems, "\n  "))
		}
		return nil

	case "build":
		if fs.NArg() != 0 || *version == "" || *out == "" {
			return errors.New(usage)
		}
		t := time.Now().UTC()
		if *stamp != "" {
			var err error
			if t, err = time.Parse(time.RFC3339, *stamp); err != nil {
				return fmt.Errorf("-time: %w", err)
			}
		}
		repo, err := loadRepo(*root)
		if err != nil {
			return err
		}
		built, err := repo.buildProxy(*out, *version, t)
		if err != nil {
			return err
		}
		for _, p := range built {
			fmt.Fprintln(stdout, p)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}
