package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// goodTree is a repository laid out like ours: a core module, a store module in its own
// directory requiring the core at the release version, a tool under internal and test data
// with a go.mod of its own.
func goodTree() map[string]string {
	return map[string]string{
		"go.work": "go 1.23.0\n\nuse (\n\t.\n\t./store\n\t./internal/tool\n)\n\nreplace example.com/core v1.2.3 => ./\n",
		"go.mod":  "module example.com/core\n\ngo 1.23.0\n",
		"version.go": "package core\n\n// Version is the release.\nconst Version = \"1.2.3\"\n\n" +
			"// Hello is what the store calls.\nfunc Hello() string { return \"hello \" + Version }\n",
		"internal/tool/go.mod":  "module example.com/core/internal/tool\n\ngo 1.23.0\n",
		"internal/tool/main.go": "package main\n\nfunc main() {}\n",
		"store/go.mod":          "module example.com/core/store\n\ngo 1.23.0\n\nrequire example.com/core v1.2.3\n",
		"store/store.go":        "package store\n\nimport \"example.com/core\"\n\n// Hello says hello.\nfunc Hello() string { return core.Hello() }\n",
		"store/testdata/go.mod": "module example.com/fixture\n",
	}
}

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// edit returns a change of the tree that replaces old with new in one file.
func edit(name, old, new string) func(files map[string]string) {
	return func(files map[string]string) { files[name] = strings.Replace(files[name], old, new, 1) }
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		change func(files map[string]string)
		want   []string // a substring of each problem, in order
	}{
		{name: "ready"},
		{
			name: "pseudo-version and replace, as before the fix",
			change: func(f map[string]string) {
				f["store/go.mod"] = "module example.com/core/store\n\ngo 1.23.0\n\n" +
					"require example.com/core v0.0.0-00010101000000-000000000000\n\nreplace example.com/core => ../\n"
			},
			want: []string{
				"store/go.mod requires example.com/core v0.0.0-00010101000000-000000000000",
				"store/go.mod replaces example.com/core",
			},
		},
		{
			name:   "an older release",
			change: edit("store/go.mod", "v1.2.3", "v1.2.2"),
			want:   []string{"store/go.mod requires example.com/core v1.2.2"},
		},
		{
			name:   "go.work without the replace",
			change: edit("go.work", "replace example.com/core v1.2.3 => ./\n", ""),
			want:   []string{"go.work lacks `replace example.com/core v1.2.3 => ./`"},
		},
		{
			name:   "go.work replacing another version",
			change: edit("go.work", "core v1.2.3 =>", "core v1.2.2 =>"),
			want:   []string{"go.work lacks `replace example.com/core v1.2.3"},
		},
		{
			name:   "a module go.work forgets",
			change: func(f map[string]string) { f["otel/go.mod"] = "module example.com/core/otel\n\ngo 1.23.0\n" },
			want:   []string{"otel/go.mod is not in go.work"},
		},
		{
			name:   "a module path that is not its directory",
			change: edit("store/go.mod", "module example.com/core/store", "module example.com/store"),
			want:   []string{"store/go.mod declares module example.com/store; in directory store it must be example.com/core/store"},
		},
		{
			name: "a published module requiring the internal one",
			change: func(f map[string]string) {
				f["store/go.mod"] += "require example.com/core/internal/tool v1.2.3\n"
			},
			want: []string{"store/go.mod requires example.com/core/internal/tool, which is not published"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := goodTree()
			if tt.change != nil {
				tt.change(files)
			}
			r, err := loadRepo(writeTree(t, files))
			if err != nil {
				t.Fatal(err)
			}
			got := r.check("v1.2.3")
			if len(got) != len(tt.want) {
				t.Fatalf("problems:\n%s\nwant %d: %q", strings.Join(got, "\n"), len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestBuildProxy(t *testing.T) {
	root := writeTree(t, goodTree())
	r, err := loadRepo(root)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	stamp := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	built, err := r.buildProxy(out, "v1.2.3", stamp)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"example.com/core", "example.com/core/store"}; !slices.Equal(built, want) {
		t.Fatalf("built %q, want %q (the internal tool is not published)", built, want)
	}
	if _, err := os.Stat(filepath.Join(out, "example.com", "core", "internal")); !os.IsNotExist(err) {
		t.Errorf("the proxy serves the internal tool (stat: %v)", err)
	}

	wantFiles := map[string][]string{
		"example.com/core":       {"go.mod", "version.go"},
		"example.com/core/store": {"go.mod", "store.go"},
	}
	for _, p := range built {
		dir := filepath.Join(out, filepath.FromSlash(p), "@v")
		list, err := os.ReadFile(filepath.Join(dir, "list"))
		if err != nil || string(list) != "v1.2.3\n" {
			t.Errorf("%s list = %q, %v; want v1.2.3", p, list, err)
		}
		var info struct{ Version, Time string }
		data, err := os.ReadFile(filepath.Join(dir, "v1.2.3.info"))
		if err == nil {
			err = json.Unmarshal(data, &info)
		}
		if err != nil || info.Version != "v1.2.3" || info.Time != "2025-03-04T05:06:07Z" {
			t.Errorf("%s info = %s, %v", p, data, err)
		}
		mod, err := os.ReadFile(filepath.Join(dir, "v1.2.3.mod"))
		m, _ := r.byPath(p)
		if err != nil || !bytes.Equal(mod, m.raw) {
			t.Errorf("%s .mod = %q, %v; want its go.mod %q", p, mod, err, m.raw)
		}

		zipName := filepath.Join(dir, "v1.2.3.zip")
		mv := module.Version{Path: p, Version: "v1.2.3"}
		if _, err := modzip.CheckZip(mv, zipName); err != nil {
			t.Errorf("%s zip: %v", p, err)
		}
		zr, err := zip.OpenReader(zipName)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range zr.File {
			names = append(names, strings.TrimPrefix(f.Name, mv.String()+"/"))
		}
		zr.Close()
		for _, want := range wantFiles[p] {
			if !slices.Contains(names, want) {
				t.Errorf("%s zip lacks %s: %q", p, want, names)
			}
		}
		for _, n := range names {
			if strings.HasPrefix(n, "store/") || strings.HasPrefix(n, "internal/tool/") {
				t.Errorf("%s zip holds %s, a file of a nested module", p, n)
			}
		}
	}
}

// TestGoGetThroughProxy fetches the modules through the proxy with the go command, as a user
// would (offline: the fixture modules need nothing else), and shows that a store requiring
// the core at the old pseudo-version fails there even though it builds in the workspace.
func TestGoGetThroughProxy(t *testing.T) {
	// The go command that runs this test (make test-oldest runs it under go1.23.0).
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		t.Fatal(err)
	}
	fetch := func(t *testing.T, files map[string]string) (string, error) {
		r, err := loadRepo(writeTree(t, files))
		if err != nil {
			t.Fatal(err)
		}
		proxy := t.TempDir()
		if _, err := r.buildProxy(proxy, "v1.2.3", time.Now()); err != nil {
			t.Fatal(err)
		}
		user := writeTree(t, map[string]string{
			"go.mod":  "module example.com/user\n\ngo 1.23.0\n",
			"main.go": "package main\n\nimport \"example.com/core/store\"\n\nfunc main() { println(store.Hello()) }\n",
		})
		env := append(os.Environ(),
			"GOWORK=off", "GOFLAGS=-mod=mod -modcacherw", "GOPROXY=file://"+filepath.ToSlash(proxy),
			"GOSUMDB=off", "GOMODCACHE="+t.TempDir(), "GOPRIVATE=", "GONOPROXY=", "GOTOOLCHAIN=local")
		var outAll []byte
		for _, args := range [][]string{{"get", "example.com/core/store@v1.2.3"}, {"build", "-o", os.DevNull, "."}, {"mod", "tidy"}} {
			cmd := exec.Command(gobin, args...)
			cmd.Dir, cmd.Env = user, env
			out, err := cmd.CombinedOutput()
			outAll = append(outAll, out...)
			if err != nil {
				return string(outAll), err
			}
		}
		return string(outAll), nil
	}

	if out, err := fetch(t, goodTree()); err != nil {
		t.Fatalf("go get, build and tidy through the proxy: %v\n%s", err, out)
	}

	old := goodTree()
	old["store/go.mod"] = "module example.com/core/store\n\ngo 1.23.0\n\n" +
		"require example.com/core v0.0.0-00010101000000-000000000000\n\nreplace example.com/core => ../\n"
	out, err := fetch(t, old)
	if err == nil {
		t.Fatalf("a store requiring the core at v0.0.0-00010101000000-000000000000 was fetched and built:\n%s", out)
	}
	if !strings.Contains(out, "example.com/core@v0.0.0-00010101000000-000000000000") {
		t.Errorf("the failure does not name the missing version:\n%s", out)
	}
}

func TestSetVersion(t *testing.T) {
	files := goodTree()
	files["store/go.mod"] = "module example.com/core/store\n\ngo 1.23.0\n\nrequire (\n\texample.com/core v1.2.3\n\texample.com/other v0.5.0\n)\n"
	root := writeTree(t, files)
	if err := setVersion(root, "v1.3.0"); err != nil {
		t.Fatal(err)
	}
	v, err := readVersion(root)
	if err != nil || v != "v1.3.0" {
		t.Fatalf("version = %q, %v; want v1.3.0", v, err)
	}
	r, err := loadRepo(root)
	if err != nil {
		t.Fatal(err)
	}
	if problems := r.check("v1.3.0"); len(problems) > 0 {
		t.Fatalf("after set-version 1.3.0:\n%s", strings.Join(problems, "\n"))
	}
	mod, err := os.ReadFile(filepath.Join(root, "store", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "example.com/core v1.3.0") || !strings.Contains(string(mod), "example.com/other v0.5.0") {
		t.Errorf("store/go.mod after set-version:\n%s", mod)
	}
	work, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(work), "v1.2.3") || !strings.Contains(string(work), "replace example.com/core v1.3.0 => ./") {
		t.Errorf("go.work after set-version:\n%s", work)
	}
}

func TestReadVersion(t *testing.T) {
	files := goodTree()
	files["version.go"] = "package core\n\nconst version = \"1.2.3\"\n"
	if v, err := readVersion(writeTree(t, files)); err == nil {
		t.Errorf("readVersion without a Version constant = %q, want an error", v)
	}
	if v, err := readVersion(writeTree(t, goodTree())); err != nil || v != "v1.2.3" {
		t.Errorf("readVersion = %q, %v; want v1.2.3", v, err)
	}
}

// A module of commands requiring the core and another module of ours (as examples/multitenant
// requires otelb24): check wants go.work to replace that module too, and set-version moves both
// requirements and both replaces.
func TestSetVersionModuleRequiringAnAddOn(t *testing.T) {
	files := goodTree()
	files["go.work"] = "go 1.23.0\n\nuse (\n\t.\n\t./store\n\t./examples/app\n\t./internal/tool\n)\n\nreplace example.com/core v1.2.3 => ./\n"
	files["examples/app/go.mod"] = "module example.com/core/examples/app\n\ngo 1.23.0\n\nrequire (\n\texample.com/core v1.2.3\n\texample.com/core/store v1.2.3\n)\n"
	files["examples/app/main.go"] = "package main\n\nimport \"example.com/core/store\"\n\nfunc main() { println(store.Hello()) }\n"
	root := writeTree(t, files)
	r, err := loadRepo(root)
	if err != nil {
		t.Fatal(err)
	}
	problems := r.check("v1.2.3")
	if len(problems) != 1 || !strings.Contains(problems[0], "go.work lacks `replace example.com/core/store v1.2.3 => ./store`") {
		t.Fatalf("check without the add-on's replace: %q", problems)
	}
	if err := setVersion(root, "v1.3.0"); err != nil {
		t.Fatal(err)
	}
	if r, err = loadRepo(root); err != nil {
		t.Fatal(err)
	}
	if problems := r.check("v1.3.0"); len(problems) > 0 {
		t.Fatalf("after set-version 1.3.0:\n%s", strings.Join(problems, "\n"))
	}
	mod, err := os.ReadFile(filepath.Join(root, "examples", "app", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "example.com/core v1.3.0") || !strings.Contains(string(mod), "example.com/core/store v1.3.0") {
		t.Errorf("examples/app/go.mod after set-version:\n%s", mod)
	}
	work, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replace example.com/core v1.3.0 => ./", "replace example.com/core/store v1.3.0 => ./store"} {
		if !strings.Contains(string(work), want) {
			t.Errorf("go.work after set-version lacks %q:\n%s", want, work)
		}
	}
}
