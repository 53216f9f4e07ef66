package layering_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Size limits of the module: short functions, and a thin main.
const (
	maxFuncLines = 80   // lines inside a function's braces, tests included
	maxMainLines = 1800 // non-test lines of cmd/brokerd
	maxMainShare = 0.12 // ... as a share of the module's non-test lines
)

// goFiles returns the module's Go files (path → source), testdata and
// hidden directories left out.
func goFiles(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "../.." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "build") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			src, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(p[len("../../"):])] = src
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 100 {
		t.Fatalf("found %d Go files: the walk missed the module", len(out))
	}
	return out
}

// TestFunctionLength: no function of the module (tests included) is
// longer than maxFuncLines.
func TestFunctionLength(t *testing.T) {
	fset := token.NewFileSet()
	for path, src := range goFiles(t) {
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var body *ast.BlockStmt
			switch fn := n.(type) {
			case *ast.FuncDecl:
				body = fn.Body
			case *ast.FuncLit:
				body = fn.Body
			}
			if body == nil {
				return true
			}
			start, end := fset.Position(body.Lbrace), fset.Position(body.Rbrace)
			if lines := end.Line - start.Line - 1; lines > maxFuncLines {
				t.Errorf("%s:%d: a function of %d lines (at most %d)", path, start.Line, lines, maxFuncLines)
			}
			return true
		})
	}
}

// TestThinMain: cmd/brokerd keeps flag parsing, the command table and
// output formatting, within maxMainLines and maxMainShare of the module.
func TestThinMain(t *testing.T) {
	var main, all int
	for path, src := range goFiles(t) {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		n := strings.Count(string(src), "\n")
		all += n
		if filepath.Dir(path) == "cmd/brokerd" {
			main += n
		}
	}
	if share := float64(main) / float64(all); main > maxMainLines || share > maxMainShare {
		t.Errorf("cmd/brokerd has %d of %d non-test lines (%.1f %%): at most %d and %.0f %%", main, all, 100*share, maxMainLines, 100*maxMainShare)
	}
	t.Logf("cmd/brokerd: %d of %d non-test lines (%.1f %%)", main, all, 100*float64(main)/float64(all))
}
