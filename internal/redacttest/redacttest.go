// Package redacttest checks that values print no secret: with every fmt verb and through
// log/slog's text and JSON handlers. It also lists a package's exported types from its source,
// so that a test can make sure none is left out of its table.
package redacttest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Verbs are the fmt verbs (with a few flags and widths) every value is printed with. %p is left
// out: it prints an address, never a value.
var Verbs = []string{
	"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%o", "%O", "%b", "%e", "%E", "%f", "%F",
	"%g", "%G", "%t", "%c", "%U", "%#x", "% x", "%#q", "%+q", "%10.4v", "%-40s", "%08d",
}

// Printings returns v printed with every verb of Verbs and logged with slog's text and JSON
// handlers, each under a label saying how.
func Printings(v any) map[string]string {
	out := make(map[string]string, len(Verbs)+4)
	for _, verb := range Verbs {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"slog JSON": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("value", "v", v)
		log.Info("group", slog.Group("g", slog.Any("v", v)))
		log.With("w", v).Info("with")
		out[name] = buf.String()
	}
	return out
}

// AssertNoSecret fails t for every printing of v (see Printings) that shows one of secrets, as
// it is or hex-encoded (as %x, %X and "% x" print a string).
func AssertNoSecret(t testing.TB, name string, v any, secrets ...string) {
	t.Helper()
	for how, s := range Printings(v) {
		for _, secret := range secrets {
			if form, ok := shows(s, secret); ok {
				t.Errorf("%s printed with %s shows the secret %q (%s):\n%s", name, how, secret, form, s)
				break
			}
		}
	}
}

// shows reports whether printed holds secret, and in which form.
func shows(printed, secret string) (string, bool) {
	if secret == "" {
		return "", false
	}
	h := hex.EncodeToString([]byte(secret))
	spaced := strings.TrimSpace(fmt.Sprintf("% x", secret))
	for form, s := range map[string]string{
		"as is": secret, "hex": h, "upper-case hex": strings.ToUpper(h),
		"spaced hex": spaced, "spaced upper-case hex": strings.ToUpper(spaced),
	} {
		if strings.Contains(printed, s) {
			return form, true
		}
	}
	return "", false
}

// ExportedTypes returns the names of the exported types declared in the Go files of dir,
// test files left out, sorted. It parses the source, whatever the build constraints say.
func ExportedTypes(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var names []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				if ts := spec.(*ast.TypeSpec); ts.Name.IsExported() {
					names = append(names, ts.Name.Name)
				}
			}
		}
	}
	sort.Strings(names)
	return names
}

// CheckTable fails t unless the exported types of dir are exactly the keys of table: a new
// type must be added to the table (with values to print, or the reason it holds no secret).
func CheckTable[V any](t testing.TB, dir string, table map[string]V) {
	t.Helper()
	declared := map[string]bool{}
	for _, name := range ExportedTypes(t, dir) {
		declared[name] = true
		if _, ok := table[name]; !ok {
			t.Errorf("exported type %s is not in the table: add values of it that reach a secret, or the reason it cannot", name)
		}
	}
	for name := range table {
		if !declared[name] {
			t.Errorf("the table names %s, which the package does not declare", name)
		}
	}
}
