package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// repoModule is one module listed in go.work.
type repoModule struct {
	Dir  string // slash-separated, relative to the root; "." for the root module
	Path string // the module path its go.mod declares
	file *modfile.File
	raw  []byte // go.mod as written, served as the .mod file
}

// repo is the repository's modules, the root module first.
type repo struct {
	root     string
	work     *modfile.WorkFile
	mods     []repoModule
	unlisted []string // go.mod files in the tree that go.work does not list
}

// loadRepo reads go.work under root and the go.mod of every module it lists.
func loadRepo(root string) (*repo, error) {
	workPath := filepath.Join(root, "go.work")
	data, err := os.ReadFile(workPath)
	if err != nil {
		return nil, err
	}
	work, err := modfile.ParseWork(workPath, data, nil)
	if err != nil {
		return nil, err
	}
	r := &repo{root: root, work: work}
	listed := map[string]bool{}
	for _, u := range work.Use {
		dir := path.Clean(filepath.ToSlash(u.Path))
		if dir == ".." || strings.HasPrefix(dir, "../") || path.IsAbs(dir) {
			return nil, fmt.Errorf("go.work uses %s, outside the repository", u.Path)
		}
		if listed[dir] {
			continue
		}
		listed[dir] = true
		modPath := filepath.Join(root, filepath.FromSlash(dir), "go.mod")
		raw, err := os.ReadFile(modPath)
		if err != nil {
			return nil, err
		}
		f, err := modfile.Parse(modPath, raw, nil)
		if err != nil {
			return nil, err
		}
		if f.Module == nil {
			return nil, fmt.Errorf("%s has no module line", modPath)
		}
		r.mods = append(r.mods, repoModule{Dir: dir, Path: f.Module.Mod.Path, file: f, raw: raw})
	}
	i := slices.IndexFunc(r.mods, func(m repoModule) bool { return m.Dir == "." })
	if i < 0 {
		return nil, errors.New("go.work does not use the root module (use .)")
	}
	r.mods[0], r.mods[i] = r.mods[i], r.mods[0]

	// A module that go.work forgets is neither tested with the others nor published: name it.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && ignoredDir(d.Name()) {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() != "go.mod" {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		if !listed[filepath.ToSlash(rel)] {
			r.unlisted = append(r.unlisted, filepath.ToSlash(filepath.Join(rel, "go.mod")))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// dirArg is a module directory as go.work names it: "./" or "./pgstore".
func dirArg(dir string) string {
	if dir == "." {
		return "./"
	}
	return "./" + dir
}

// ignoredDir reports whether the go command skips a directory of this name in ./... patterns
// (and so may hold a go.mod of test data).
func ignoredDir(name string) bool {
	return name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// published returns the modules users fetch: those whose path has no "internal" element.
func (r *repo) published() []repoModule {
	var out []repoModule
	for _, m := range r.mods {
		if isPublished(m.Path) {
			out = append(out, m)
		}
	}
	return out
}

// isPublished reports whether users can import a module of this path: only one whose path has
// no "internal" element.
func isPublished(modPath string) bool {
	return !slices.Contains(strings.Split(modPath, "/"), "internal")
}

// byPath returns the repository's module of that path.
func (r *repo) byPath(p string) (repoModule, bool) {
	for _, m := range r.mods {
		if m.Path == p {
			return m, true
		}
	}
	return repoModule{}, false
}

// check returns what stands between the modules and a release at version: a user's go get
// resolves every requirement through a module proxy and ignores replace directives, and a
// tag "<dir>/vX.Y.Z" finds a module only where its path matches its directory.
func (r *repo) check(version string) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	core := r.mods[0]
	if err := module.Check(core.Path, version); err != nil {
		add("%v", err)
	}
	for _, u := range r.unlisted {
		add("%s is not in go.work: add it (use ./%s) so that it is tested and published", u, path.Dir(u))
	}
	if missing := r.notInMakefile(); len(missing) > 0 {
		add("Makefile's MODULES lacks %s: make test would not test it", strings.Join(missing, " "))
	}
	for _, m := range r.mods[1:] {
		if want := core.Path + "/" + m.Dir; m.Path != want {
			add("%s/go.mod declares module %s; in directory %s it must be %s (the tag %s/%s finds it there)",
				m.Dir, m.Path, m.Dir, want, m.Dir, version)
		}
	}
	for _, m := range r.published() {
		for _, req := range m.file.Require {
			_, ours := r.byPath(req.Mod.Path)
			switch {
			case !ours:
			case !isPublished(req.Mod.Path):
				add("%s/go.mod requires %s, which is not published", m.Dir, req.Mod.Path)
			case req.Mod.Version != version:
				add("%s/go.mod requires %s %s: every module requires the repository's modules at the release version %s (modproxy set-version)",
					m.Dir, req.Mod.Path, req.Mod.Version, version)
			}
		}
		for _, rep := range m.file.Replace {
			if _, ours := r.byPath(rep.Old.Path); ours {
				add("%s/go.mod replaces %s: a user's build ignores replace directives; go.work keeps development local", m.Dir, rep.Old.Path)
			}
		}
	}
	// A workspace module is a root of the workspace's module graph, not a replacement of the
	// versions other modules require: without this replace the workspace would fetch the
	// required (unreleased) version from the proxy.
	for _, dep := range r.requiredOurs() {
		if !slices.ContainsFunc(r.work.Replace, func(rep *modfile.Replace) bool {
			return rep.Old == module.Version{Path: dep.Path, Version: version} && rep.New.Version == "" &&
				path.Clean(filepath.ToSlash(rep.New.Path)) == dep.Dir
		}) {
			add("go.work lacks `replace %s %s => %s`: the workspace would fetch that version from the proxy", dep.Path, version, dirArg(dep.Dir))
		}
	}
	return problems
}

// makefileModules is the Makefile's list of the directories every target runs in.
var makefileModules = regexp.MustCompile(`(?m)^MODULES\s*:?=(.*)$`)

// notInMakefile returns the go.work modules that a Makefile's MODULES line leaves out (none
// when there is no Makefile or no such line).
func (r *repo) notInMakefile() []string {
	data, err := os.ReadFile(filepath.Join(r.root, "Makefile"))
	if err != nil {
		return nil
	}
	line := makefileModules.FindSubmatch(data)
	if line == nil {
		return nil
	}
	var listed []string
	for _, d := range strings.Fields(string(line[1])) {
		listed = append(listed, path.Clean(d))
	}
	var missing []string
	for _, m := range r.mods {
		if !slices.Contains(listed, m.Dir) {
			missing = append(missing, m.Dir)
		}
	}
	return missing
}

// requiredOurs returns the published modules that another published module requires.
func (r *repo) requiredOurs() []repoModule {
	var out []repoModule
	for _, dep := range r.published() {
		for _, m := range r.published() {
			if m.Path != dep.Path && slices.ContainsFunc(m.file.Require, func(req *modfile.Require) bool { return req.Mod.Path == dep.Path }) {
				out = append(out, dep)
				break
			}
		}
	}
	return out
}

// buildProxy writes a GOPROXY directory (<escaped path>/@v/list, .info, .mod, .zip) that
// serves every published module at version, zipped from its directory as the go command
// would zip a tag, and returns the module paths it wrote.
func (r *repo) buildProxy(out, version string, t time.Time) ([]string, error) {
	info, err := json.Marshal(struct {
		Version string
		Time    string
	}{version, t.UTC().Format(time.RFC3339)})
	if err != nil {
		return nil, err
	}
	var built []string
	for _, m := range r.published() {
		mv := module.Version{Path: m.Path, Version: version}
		if err := module.Check(mv.Path, mv.Version); err != nil {
			return nil, err
		}
		esc, err := module.EscapePath(m.Path)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(out, filepath.FromSlash(esc), "@v")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		base := filepath.Join(dir, version)
		if err := os.WriteFile(filepath.Join(dir, "list"), []byte(version+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(base+".info", info, 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(base+".mod", m.raw, 0o644); err != nil {
			return nil, err
		}
		if err := writeZip(base+".zip", mv, filepath.Join(r.root, filepath.FromSlash(m.Dir))); err != nil {
			return nil, fmt.Errorf("zip of %s: %w", m.Path, err)
		}
		built = append(built, m.Path)
	}
	return built, nil
}

// writeZip writes the module zip of dir (without nested modules, vendor or VCS directories,
// checked against the go command's limits) to name.
func writeZip(name string, mv module.Version, dir string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := modzip.CreateFromDir(f, mv, dir); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// versionLine is the root package's Version constant in version.go: the one place the
// release version is written.
var versionLine = regexp.MustCompile(`(?m)^const Version = "([^"]*)"$`)

// readVersion returns "v" + the Version constant of the root package.
func readVersion(root string) (string, error) {
	name := filepath.Join(root, "version.go")
	data, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	all := versionLine.FindAllSubmatch(data, -1)
	if len(all) != 1 {
		return "", fmt.Errorf("%s: want one line `const Version = \"X.Y.Z\"`, found %d", name, len(all))
	}
	return "v" + string(all[0][1]), nil
}

// setVersion writes version (vX.Y.Z) into version.go and into every published module's
// requirement of the repository's modules.
func setVersion(root, version string) error {
	r, err := loadRepo(root)
	if err != nil {
		return err
	}
	if err := module.Check(r.mods[0].Path, version); err != nil {
		return err
	}
	if _, err := readVersion(root); err != nil {
		return err
	}
	name := filepath.Join(root, "version.go")
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	data = versionLine.ReplaceAll(data, []byte(`const Version = "`+strings.TrimPrefix(version, "v")+`"`))
	if err := os.WriteFile(name, data, 0o644); err != nil {
		return err
	}
	for _, dep := range r.requiredOurs() {
		for _, rep := range slices.Clone(r.work.Replace) {
			if rep.Old.Path == dep.Path {
				if err := r.work.DropReplace(rep.Old.Path, rep.Old.Version); err != nil {
					return err
				}
			}
		}
		if err := r.work.AddReplace(dep.Path, version, dirArg(dep.Dir), ""); err != nil {
			return err
		}
	}
	r.work.Cleanup()
	if err := os.WriteFile(filepath.Join(root, "go.work"), modfile.Format(r.work.Syntax), 0o644); err != nil {
		return err
	}
	for _, m := range r.published() {
		changed := false
		for _, req := range m.file.Require {
			if _, ours := r.byPath(req.Mod.Path); ours && req.Mod.Version != version {
				if err := m.file.AddRequire(req.Mod.Path, version); err != nil {
					return err
				}
				changed = true
			}
		}
		if !changed {
			continue
		}
		m.file.Cleanup()
		out, err := m.file.Format()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(m.Dir), "go.mod"), out, 0o644); err != nil {
			return err
		}
	}
	return nil
}
